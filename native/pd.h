// ProtectionDomain (ibv_alloc_pd). Keeps its Context's JS object alive so the
// context cannot be finalized under it.
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>

#include "util/env.h"

namespace rdma {

class ProtectionDomain : public Napi::ObjectWrap<ProtectionDomain>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit ProtectionDomain(const Napi::CallbackInfo& info);
  ~ProtectionDomain() override;
  void ReleaseKernelObjects() override;

  ibv_pd* Get(Napi::Env env);
  static ProtectionDomain* From(const Napi::Value& v, const char* name);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  Napi::Value GetHandle(const Napi::CallbackInfo& info);

  ibv_pd* pd_ = nullptr;
  Napi::ObjectReference context_;
};

}  // namespace rdma
