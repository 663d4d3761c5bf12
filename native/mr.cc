#include "mr.h"

#include <cerrno>
#include <cstdint>
#include <vector>

#include "pd.h"
#include "util/errors.h"

namespace rdma {

constexpr uint32_t kMaxAdviseRanges = 4095;

static const napi_type_tag kMemoryRegionTag = {0x6e6f64652d72646dULL, 0x0000000000001003ULL};

void MemoryRegion::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("MemoryRegion", DefineClass(env, "MemoryRegion", {
      InstanceMethod<&MemoryRegion::Close>("close"),
      InstanceMethod<&MemoryRegion::Advise>("advise"),
      InstanceAccessor<&MemoryRegion::GetAddr>("addr"),
      InstanceAccessor<&MemoryRegion::GetLength>("length"),
      InstanceAccessor<&MemoryRegion::GetLkey>("lkey"),
      InstanceAccessor<&MemoryRegion::GetRkey>("rkey"),
      InstanceAccessor<&MemoryRegion::GetClosed>("closed"),
      InstanceAccessor<&MemoryRegion::GetOwnPages>("ownPages"),
  }));
}

// new MemoryRegion(pd, 'buffer', bufferOrView, access)
// new MemoryRegion(pd, 'implicit', null, access)          implicit ODP
// new MemoryRegion(pd, 'dmabuf', {fd, offset, length, iova}, access)
MemoryRegion::MemoryRegion(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<MemoryRegion>(info), Tracked(info.Env(), Tracked::kRegionOrCq) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kMemoryRegionTag);
  ProtectionDomain* pdw = ProtectionDomain::From(info[0], "pd");
  ibv_pd* pd = pdw->Get(env);
  std::string kind = ArgString(info[1], "kind");
  int access = int(ArgU32(info[3], "access"));
  errno = 0;
  if (kind == "buffer") {
    char* ptr = nullptr;
    size_t len = 0;
    BufferSpan(info[2], "buffer", &ptr, &len);
    if (len == 0) ThrowRange(env, "buffer must not be empty");
    block_ = AcquireBlock(ptr, len);
    if (!block_) pin_ = PinJsBuffer(info[2], "buffer");
    errno = 0;
    mr_ = ibv_reg_mr(pd, ptr, len, access);
    if (!mr_) {
      int err = errno ? errno : EINVAL;
      Release();
      Throw(env, "ibv_reg_mr", err, std::to_string(len) + " bytes");
    }
    buffer_ = Napi::Persistent(info[2].As<Napi::Object>());
  } else if (kind == "implicit") {
    mr_ = ibv_reg_mr(pd, nullptr, SIZE_MAX, access);
    if (!mr_) Throw(env, "ibv_reg_mr", errno ? errno : EINVAL, "implicit on-demand paging (whole address space)");
    implicit_ = true;
  } else if (kind == "dmabuf") {
    if (!info[2].IsObject()) ThrowType(env, "dmabuf must be an object {fd, offset, length, iova}");
    Napi::Object o = info[2].As<Napi::Object>();
    int32_t fd = ArgI32(o.Get("fd"), "fd");
    uint64_t offset = ArgU64(o.Get("offset"), "offset");
    uint64_t length = ArgU64(o.Get("length"), "length");
    uint64_t iova = ArgU64(o.Get("iova"), "iova");
    if (fd < 0) ThrowRange(env, "fd must be >= 0");
    if (length == 0) ThrowRange(env, "length must be > 0");
    mr_ = ibv_reg_dmabuf_mr(pd, offset, length, iova, fd, access);
    if (!mr_) Throw(env, "ibv_reg_dmabuf_mr", errno ? errno : EINVAL);
  } else {
    ThrowType(env, "kind must be 'buffer', 'implicit' or 'dmabuf'");
  }
  pd_ = Napi::Persistent(info[0].As<Napi::Object>());
}

MemoryRegion::~MemoryRegion() { Release(); }

void MemoryRegion::ReleaseKernelObjects() { Release(); }

void MemoryRegion::Release() {
  if (mr_) {
    if (ibv_dereg_mr(mr_) != 0) {
      // the kernel keeps the memory registered (rxe: a window is still
      // bound to it): a peer with its rkey can still write there, so the
      // memory is never freed nor unpinned, and stays out of any allocator's
      // reach until the process exits (a leak instead of a reuse)
      mr_ = nullptr;
      block_ = nullptr;
      pin_ = nullptr;
      return;
    }
    mr_ = nullptr;
  }
  // only after deregistration: the NIC may use the memory until then
  if (block_) ReleaseBlock(block_);
  block_ = nullptr;
  if (pin_) UnpinJsBuffer(pin_);
  pin_ = nullptr;
}

ibv_mr* MemoryRegion::Get(Napi::Env env) {
  if (!mr_) ThrowClosed(env, "MemoryRegion");
  return mr_;
}

MemoryRegion* MemoryRegion::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<MemoryRegion>(v, &kMemoryRegionTag, name, "MemoryRegion");
}

Napi::Value MemoryRegion::Close(const Napi::CallbackInfo& info) {
  if (mr_) {
    int rc = ibv_dereg_mr(mr_);
    if (rc) Throw(info.Env(), "ibv_dereg_mr", rc, "memory windows bound to it must be closed first");
    mr_ = nullptr;
    Release();
    buffer_.Reset();
    pd_.Reset();
  }
  return info.Env().Undefined();
}

// advise(advice, flags, [{addr, length}]) — ibv_advise_mr over ranges of this
// MR (ODP only); advice 0 PREFETCH, 1 PREFETCH_WRITE, 2 PREFETCH_NO_FAULT
Napi::Value MemoryRegion::Advise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_mr* mr = Get(env);
  uint32_t advice = ArgU32(info[0], "advice");
  uint32_t flags = ArgU32(info[1], "flags");
  if (!info[2].IsArray()) ThrowType(env, "ranges must be an array");
  Napi::Array ranges = info[2].As<Napi::Array>();
  uint32_t n = ranges.Length();
  if (n == 0) ThrowRange(env, "ranges must not be empty");
  // checked before allocating: the kernel takes the list as one uverbs
  // attribute, whose length is 16 bits (65535 / sizeof(ib_uverbs_sge) = 4095)
  if (n > kMaxAdviseRanges)
    ThrowRange(env, "ranges has " + std::to_string(n) + " entries; at most " + std::to_string(kMaxAdviseRanges) + " fit one ibv_advise_mr");
  std::vector<ibv_sge> sges(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value r = ranges.Get(i);
    if (!r.IsObject()) ThrowType(env, "ranges[" + std::to_string(i) + "] must be {addr, length}");
    Napi::Object o = r.As<Napi::Object>();
    sges[i].addr = ArgU64(o.Get("addr"), "addr");
    sges[i].length = ArgU32(o.Get("length"), "length");
    sges[i].lkey = mr->lkey;
  }
  int rc = ibv_advise_mr(mr->pd, ibv_advise_mr_advice(advice), flags, sges.data(), sges.size());
  if (rc) Throw(env, "ibv_advise_mr", rc);
  return env.Undefined();
}

Napi::Value MemoryRegion::GetAddr(const Napi::CallbackInfo& info) {
  // user-space addresses fit in 47 bits: a JS number holds them exactly; a
  // dma-buf region's iova may not, and then comes back as an exact bigint
  uint64_t addr = mr_ ? uint64_t(uintptr_t(mr_->addr)) : 0;
  if (addr > 9007199254740991ull) return Napi::BigInt::New(info.Env(), addr);
  return Napi::Number::New(info.Env(), double(addr));
}
Napi::Value MemoryRegion::GetLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), mr_ ? double(mr_->length) : 0);
}
Napi::Value MemoryRegion::GetLkey(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), mr_ ? mr_->lkey : 0); }
Napi::Value MemoryRegion::GetRkey(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), mr_ ? mr_->rkey : 0); }
// whether the memory lies in a block the addon allocated (allocate()): whole
// pages that hold nothing else, whatever the length asked for
Napi::Value MemoryRegion::GetOwnPages(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), block_ != nullptr); }
Napi::Value MemoryRegion::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !mr_); }

}  // namespace rdma
