// MemoryRegion: ibv_reg_mr (plain and on-demand paging, explicit or implicit)
// and ibv_reg_dmabuf_mr. The registered memory stays alive while registered:
// addon-allocated memory through its block's reference count, JS memory
// through a strong reference to the buffer object.
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>

#include "memory.h"

#include "util/env.h"

namespace rdma {

class MemoryRegion : public Napi::ObjectWrap<MemoryRegion>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit MemoryRegion(const Napi::CallbackInfo& info);
  ~MemoryRegion() override;
  void ReleaseKernelObjects() override;

  ibv_mr* Get(Napi::Env env);
  static MemoryRegion* From(const Napi::Value& v, const char* name);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Advise(const Napi::CallbackInfo& info);
  Napi::Value GetAddr(const Napi::CallbackInfo& info);
  Napi::Value GetLength(const Napi::CallbackInfo& info);
  Napi::Value GetLkey(const Napi::CallbackInfo& info);
  Napi::Value GetRkey(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  Napi::Value GetOwnPages(const Napi::CallbackInfo& info);
  void Release();

  ibv_mr* mr_ = nullptr;
  Block* block_ = nullptr;
  JsPin* pin_ = nullptr;  // JS memory: its backing store, held while registered
  Napi::ObjectReference buffer_;
  Napi::ObjectReference pd_;
  bool implicit_ = false;
};

}  // namespace rdma
