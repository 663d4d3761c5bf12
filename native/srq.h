// SharedReceiveQueue (ibv_create_srq): receives shared by several QPs.
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>

#include "util/env.h"

namespace rdma {

class SharedReceiveQueue : public Napi::ObjectWrap<SharedReceiveQueue>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit SharedReceiveQueue(const Napi::CallbackInfo& info);
  ~SharedReceiveQueue() override;
  void ReleaseKernelObjects() override;

  ibv_srq* Get(Napi::Env env);
  static SharedReceiveQueue* From(const Napi::Value& v, const char* name);

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value PostRecv(const Napi::CallbackInfo& info);
  Napi::Value Modify(const Napi::CallbackInfo& info);
  Napi::Value Query(const Napi::CallbackInfo& info);
  Napi::Value GetHandle(const Napi::CallbackInfo& info);
  Napi::Value GetMaxWr(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  ibv_srq* srq_ = nullptr;
  uint32_t max_wr_ = 0, max_sge_ = 0;  // as granted: bounds for the lists posted
  Napi::ObjectReference pd_;
};

}  // namespace rdma
