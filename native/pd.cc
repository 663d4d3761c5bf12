#include "pd.h"

#include <cerrno>

#include "context.h"
#include "util/errors.h"

namespace rdma {

static const napi_type_tag kProtectionDomainTag = {0x6e6f64652d72646dULL, 0x0000000000001002ULL};

void ProtectionDomain::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("ProtectionDomain", DefineClass(env, "ProtectionDomain", {
      InstanceMethod<&ProtectionDomain::Close>("close"),
      InstanceAccessor<&ProtectionDomain::GetClosed>("closed"),
      InstanceAccessor<&ProtectionDomain::GetHandle>("handle"),
  }));
}

ProtectionDomain::ProtectionDomain(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<ProtectionDomain>(info), Tracked(info.Env(), Tracked::kPd) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kProtectionDomainTag);
  Context* ctx = Context::From(info[0], "context");
  errno = 0;
  pd_ = ibv_alloc_pd(ctx->Get(env));
  if (!pd_) Throw(env, "ibv_alloc_pd", errno ? errno : ENOMEM);
  context_ = Napi::Persistent(info[0].As<Napi::Object>());
}

// safety net only: the TS layer closes MRs, MWs and QPs first
ProtectionDomain::~ProtectionDomain() { ReleaseKernelObjects(); }

void ProtectionDomain::ReleaseKernelObjects() {
  if (pd_) ibv_dealloc_pd(pd_);
  pd_ = nullptr;
}

ibv_pd* ProtectionDomain::Get(Napi::Env env) {
  if (!pd_) ThrowClosed(env, "ProtectionDomain");
  return pd_;
}

ProtectionDomain* ProtectionDomain::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<ProtectionDomain>(v, &kProtectionDomainTag, name, "ProtectionDomain");
}

Napi::Value ProtectionDomain::Close(const Napi::CallbackInfo& info) {
  if (pd_) {
    int rc = ibv_dealloc_pd(pd_);
    // EBUSY: something registered on it is still open; stay open so the
    // caller can close the rest and retry
    if (rc) Throw(info.Env(), "ibv_dealloc_pd", rc, "resources still use this protection domain");
    pd_ = nullptr;
    context_.Reset();
  }
  return info.Env().Undefined();
}

Napi::Value ProtectionDomain::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !pd_); }
Napi::Value ProtectionDomain::GetHandle(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), pd_ ? pd_->handle : 0);
}

}  // namespace rdma
