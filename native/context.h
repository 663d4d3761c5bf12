// Context: an opened device (ibv_open_device). Queries (device, port, GID
// table) and async events (ibv_get_async_event on the context's async fd,
// watched by a Poller only while JS listens).
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>
#include <memory>

#include "util/poller.h"

namespace rdma {

class Context : public Napi::ObjectWrap<Context> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit Context(const Napi::CallbackInfo& info);
  ~Context() override;

  // The open context, or throws ECLOSED.
  ibv_context* Get(Napi::Env env, const char* what = "Context");
  static Context* From(const Napi::Value& v, const char* name);
  // A Context over a device context someone else owns (librdmacm for a CM
  // id): never closed by us; keeps `owner` alive.
  static Napi::Object Borrow(Napi::Env env, ibv_context* ctx, Napi::Object owner);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value QueryDevice(const Napi::CallbackInfo& info);
  Napi::Value QueryPort(const Napi::CallbackInfo& info);
  Napi::Value QueryGidTable(const Napi::CallbackInfo& info);
  Napi::Value WatchEvents(const Napi::CallbackInfo& info);
  Napi::Value UnwatchEvents(const Napi::CallbackInfo& info);
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  void DrainEvents();
  void Release();

  ibv_context* ctx_ = nullptr;
  bool owned_ = true;
  Napi::ObjectReference owner_;
  std::string name_;
  Poller* poller_ = nullptr;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_;
};

}  // namespace rdma
