// Context: an opened device (librdmacm's context for it, see context.cc). Queries (device, port, GID
// table) and async events (ibv_get_async_event on the context's async fd,
// watched by a Poller only while JS listens).
#pragma once
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <napi.h>
#include <memory>

#include "util/poller.h"

#include "util/env.h"

namespace rdma {

class Context : public Napi::ObjectWrap<Context>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit Context(const Napi::CallbackInfo& info);
  ~Context() override;
  void ReleaseKernelObjects() override;

  // The open context, or throws ECLOSED.
  ibv_context* Get(Napi::Env env, const char* what = "Context");
  static Context* From(const Napi::Value& v, const char* name);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value QueryDevice(const Napi::CallbackInfo& info);
  Napi::Value QueryPort(const Napi::CallbackInfo& info);
  Napi::Value QueryGidTable(const Napi::CallbackInfo& info);
  Napi::Value WatchEvents(const Napi::CallbackInfo& info);
  Napi::Value UnwatchEvents(const Napi::CallbackInfo& info);
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  static void DrainEvents(ibv_context* ctx);
  void StopWatching();
  void Unwatch();  // StopWatching() without Node-API calls
  void Release();

  ibv_context* ctx_ = nullptr;
  ibv_context** list_ = nullptr;  // from rdma_get_devices
  std::string name_;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_;
};

}  // namespace rdma
