#include "mw.h"

#include <cerrno>

#include "mr.h"
#include "pd.h"
#include "qp.h"
#include "util/errors.h"

namespace rdma {

static const napi_type_tag kMemoryWindowTag = {0x6e6f64652d72646dULL, 0x0000000000001004ULL};

void MemoryWindow::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("MemoryWindow", DefineClass(env, "MemoryWindow", {
      InstanceMethod<&MemoryWindow::Close>("close"),
      InstanceMethod<&MemoryWindow::Bind>("bind"),
      InstanceAccessor<&MemoryWindow::GetRkey>("rkey"),
      InstanceAccessor<&MemoryWindow::GetType>("type"),
      InstanceAccessor<&MemoryWindow::GetClosed>("closed"),
  }));
}

// new MemoryWindow(pd, type: 1 | 2)
MemoryWindow::MemoryWindow(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<MemoryWindow>(info), Tracked(info.Env(), Tracked::kWindow) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kMemoryWindowTag);
  ibv_pd* pd = ProtectionDomain::From(info[0], "pd")->Get(env);
  uint32_t type = ArgU32(info[1], "type");
  if (type != 1 && type != 2) ThrowRange(env, "type must be 1 or 2");
  errno = 0;
  mw_ = ibv_alloc_mw(pd, type == 1 ? IBV_MW_TYPE_1 : IBV_MW_TYPE_2);
  if (!mw_) Throw(env, "ibv_alloc_mw", errno ? errno : EOPNOTSUPP, "type " + std::to_string(type));
  pd_ = Napi::Persistent(info[0].As<Napi::Object>());
}

MemoryWindow::~MemoryWindow() {
  ReleaseKernelObjects();
  if (mw_) {
    // still allocated (and maybe bound): the region and the QP must outlive
    // it, so their references are never deleted (a leak, not a reuse)
    bound_mr_.SuppressDestruct();
    bound_qp_.SuppressDestruct();
  }
}

void MemoryWindow::ReleaseKernelObjects() {
  if (mw_ && ibv_dealloc_mw(mw_) == 0) mw_ = nullptr;
}

void MemoryWindow::HoldBinding(Napi::Object mr, Napi::Object qp) {
  bound_mr_ = Napi::Persistent(mr);
  bound_qp_ = Napi::Persistent(qp);
}

ibv_mw* MemoryWindow::Get(Napi::Env env) {
  if (!mw_) ThrowClosed(env, "MemoryWindow");
  return mw_;
}

MemoryWindow* MemoryWindow::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<MemoryWindow>(v, &kMemoryWindowTag, name, "MemoryWindow");
}

Napi::Value MemoryWindow::Close(const Napi::CallbackInfo& info) {
  if (mw_) {
    int rc = ibv_dealloc_mw(mw_);
    if (rc) Throw(info.Env(), "ibv_dealloc_mw", rc);
    mw_ = nullptr;
    pd_.Reset();
    bound_mr_.Reset();
    bound_qp_.Reset();
  }
  return info.Env().Undefined();
}

// bind(qp, mr, addr, length, access, wrId, sendFlags): type 1 only
// (ibv_bind_mw posts a bind WR on qp; its completion reports the result).
// With mr = null the window is unbound. Returns the new rkey.
Napi::Value MemoryWindow::Bind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_mw* mw = Get(env);
  if (mw->type != IBV_MW_TYPE_1) ThrowType(env, "bind() is for type 1 windows; bind type 2 with a BIND_MW work request");
  ibv_qp* qp = QueuePair::From(info[0], "qp")->Get(env);
  ibv_mw_bind b = {};
  bool unbind = info[1].IsNull() || info[1].IsUndefined();
  if (!unbind) {
    b.bind_info.mr = MemoryRegion::From(info[1], "mr")->Get(env);
    b.bind_info.addr = ArgU64(info[2], "addr");
    b.bind_info.length = ArgU64(info[3], "length");
    b.bind_info.mw_access_flags = ArgU32(info[4], "access");
  } else {
    // unbind = a zero-length bind. It names the MR of the current binding:
    // providers (rxe) dereference bind_info.mr even for zero length
    if (bound_mr_.IsEmpty()) ThrowType(env, "the window is not bound: nothing to unbind");
    b.bind_info.mr = MemoryRegion::Unwrap(bound_mr_.Value())->Get(env);
    b.bind_info.addr = uint64_t(uintptr_t(b.bind_info.mr->addr));
    b.bind_info.length = 0;
  }
  b.wr_id = ArgU64(info[5], "wrId");
  b.send_flags = ArgU32(info[6], "sendFlags");
  int rc = ibv_bind_mw(qp, mw, &b);
  if (rc) Throw(env, "ibv_bind_mw", rc);
  if (unbind) bound_mr_.Reset();
  else bound_mr_ = Napi::Persistent(info[1].As<Napi::Object>());
  return Napi::Number::New(env, mw->rkey);
}

Napi::Value MemoryWindow::GetRkey(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), mw_ ? mw_->rkey : 0); }
Napi::Value MemoryWindow::GetType(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), mw_ ? (mw_->type == IBV_MW_TYPE_1 ? 1 : 2) : 0);
}
Napi::Value MemoryWindow::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !mw_); }

}  // namespace rdma
