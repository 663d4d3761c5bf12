// AddressHandle (ibv_create_ah): where a UD send goes (port, LID, GRH).
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>

#include "util/env.h"

namespace rdma {

class AddressHandle : public Napi::ObjectWrap<AddressHandle>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit AddressHandle(const Napi::CallbackInfo& info);
  ~AddressHandle() override;
  void ReleaseKernelObjects() override;

  ibv_ah* Get(Napi::Env env);
  static AddressHandle* From(const Napi::Value& v, const char* name);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  ibv_ah* ah_ = nullptr;
  Napi::ObjectReference pd_;
};

}  // namespace rdma
