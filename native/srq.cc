#include "srq.h"

#include <cerrno>

#include "pd.h"
#include "qp.h"
#include "util/errors.h"

namespace rdma {

static const napi_type_tag kSharedReceiveQueueTag = {0x6e6f64652d72646dULL, 0x0000000000001007ULL};

void SharedReceiveQueue::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("SharedReceiveQueue", DefineClass(env, "SharedReceiveQueue", {
      InstanceMethod<&SharedReceiveQueue::Close>("close"),
      InstanceMethod<&SharedReceiveQueue::PostRecv>("postRecv"),
      InstanceMethod<&SharedReceiveQueue::Modify>("modify"),
      InstanceMethod<&SharedReceiveQueue::Query>("query"),
      InstanceAccessor<&SharedReceiveQueue::GetHandle>("handle"),
      InstanceAccessor<&SharedReceiveQueue::GetMaxWr>("maxWr"),
      InstanceAccessor<&SharedReceiveQueue::GetClosed>("closed"),
  }));
}

// new SharedReceiveQueue(pd, {maxWr, maxSge, limit})
SharedReceiveQueue::SharedReceiveQueue(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<SharedReceiveQueue>(info), Tracked(info.Env(), Tracked::kOnPd) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kSharedReceiveQueueTag);
  ibv_pd* pd = ProtectionDomain::From(info[0], "pd")->Get(env);
  if (!info[1].IsObject()) ThrowType(env, "attrs must be an object");
  Napi::Object a = info[1].As<Napi::Object>();
  ibv_srq_init_attr attr = {};
  attr.attr.max_wr = ArgU32(a.Get("maxWr"), "maxWr");
  attr.attr.max_sge = ArgU32(a.Get("maxSge"), "maxSge");
  attr.attr.srq_limit = ArgU32(a.Get("limit"), "limit");
  errno = 0;
  srq_ = ibv_create_srq(pd, &attr);
  if (!srq_) Throw(env, "ibv_create_srq", errno ? errno : EINVAL);
  max_wr_ = attr.attr.max_wr;  // as granted: the longest list a post can carry
  max_sge_ = attr.attr.max_sge;
  pd_ = Napi::Persistent(info[0].As<Napi::Object>());
}

SharedReceiveQueue::~SharedReceiveQueue() { ReleaseKernelObjects(); }

void SharedReceiveQueue::ReleaseKernelObjects() {
  if (srq_) ibv_destroy_srq(srq_);
  srq_ = nullptr;
}

ibv_srq* SharedReceiveQueue::Get(Napi::Env env) {
  if (!srq_) ThrowClosed(env, "SharedReceiveQueue");
  return srq_;
}

SharedReceiveQueue* SharedReceiveQueue::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<SharedReceiveQueue>(v, &kSharedReceiveQueueTag, name, "SharedReceiveQueue");
}

Napi::Value SharedReceiveQueue::Close(const Napi::CallbackInfo& info) {
  if (srq_) {
    int rc = ibv_destroy_srq(srq_);
    if (rc) Throw(info.Env(), "ibv_destroy_srq", rc, "queue pairs using it must be closed first");
    srq_ = nullptr;
    pd_.Reset();
  }
  return info.Env().Undefined();
}

Napi::Value SharedReceiveQueue::PostRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_srq* srq = Get(env);
  RecvStorage st;
  ParseRecvList(info[0], st, max_wr_, max_sge_);
  if (st.wrs.empty()) return env.Undefined();
  ibv_recv_wr* bad = nullptr;
  int rc = ibv_post_srq_recv(srq, st.wrs.data(), &bad);
  if (rc) {
    size_t idx = bad ? size_t(bad - st.wrs.data()) : 0;
    Napi::Error err = MakeError(env, "ibv_post_srq_recv", rc, "work request " + std::to_string(idx) + " of " + std::to_string(st.wrs.size()));
    err.Value().Set("posted", Napi::Number::New(env, double(idx)));
    throw err;
  }
  return env.Undefined();
}

// modify({limit}) arms the SRQ limit event (SRQ_LIMIT_REACHED)
Napi::Value SharedReceiveQueue::Modify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_srq* srq = Get(env);
  if (!info[0].IsObject()) ThrowType(env, "attrs must be an object");
  ibv_srq_attr a = {};
  a.srq_limit = ArgU32(info[0].As<Napi::Object>().Get("limit"), "limit");
  int rc = ibv_modify_srq(srq, &a, IBV_SRQ_LIMIT);
  if (rc) Throw(env, "ibv_modify_srq", rc);
  return env.Undefined();
}

Napi::Value SharedReceiveQueue::Query(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_srq_attr a = {};
  int rc = ibv_query_srq(Get(env), &a);
  if (rc) Throw(env, "ibv_query_srq", rc);
  Napi::Object o = Napi::Object::New(env);
  o.Set("maxWr", a.max_wr);
  o.Set("maxSge", a.max_sge);
  o.Set("limit", a.srq_limit);
  return o;
}

Napi::Value SharedReceiveQueue::GetHandle(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), srq_ ? srq_->handle : 0);
}
Napi::Value SharedReceiveQueue::GetMaxWr(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), max_wr_); }
Napi::Value SharedReceiveQueue::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !srq_); }

}  // namespace rdma
