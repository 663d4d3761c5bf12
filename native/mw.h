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
  // A BIND_MW work request binding this (type 2) window onto `mr` was
  // posted on `qp`: the kernel now holds both (rxe refuses to deregister
  // the region and stalls destroying the QP while the window is bound), so
  // the window holds their native objects until it is closed or bound again.
  // Without this a GC could finalize the region first and free registered
  // memory (docs/hardening.md, L1).
  void HoldBinding(Napi::Object mr, Napi::Object qp);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Bind(const Napi::CallbackInfo& info);
  Napi::Value GetRkey(const Napi::CallbackInfo& info);
  Napi::Value GetType(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  ibv_mw* mw_ = nullptr;
  Napi::ObjectReference pd_;
  // what a bind keeps in the kernel: the region (both types) and, for type
  // 2, the QP it was bound through; released only after ibv_dealloc_mw
  // succeeded (a window that cannot be deallocated keeps them for good)
  Napi::ObjectReference bound_mr_;
  Napi::ObjectReference bound_qp_;
};

}  // namespace rdma
