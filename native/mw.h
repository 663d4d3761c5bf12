// MemoryWindow (ibv_alloc_mw): type 1 bound with ibv_bind_mw, type 2 bound
// by a BIND_MW work request (QueuePair.postSend).
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>

#include "util/env.h"

namespace rdma {

class MemoryWindow : public Napi::ObjectWrap<MemoryWindow>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit MemoryWindow(const Napi::CallbackInfo& info);
  ~MemoryWindow() override;
  void ReleaseKernelObjects() override;

  ibv_mw* Get(Napi::Env env);
  static MemoryWindow* From(const Napi::Value& v, const char* name);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Bind(const Napi::CallbackInfo& info);
  Napi::Value GetRkey(const Napi::CallbackInfo& info);
  Napi::Value GetType(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  ibv_mw* mw_ = nullptr;
  Napi::ObjectReference pd_;
  Napi::ObjectReference bound_mr_;  // a type-1 bind keeps its MR alive
};

}  // namespace rdma
