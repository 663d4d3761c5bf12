// QueuePair's packed fast path: work requests packed by lib/verbs/qp.ts into
// Float64Arrays bound once (setPackBuffers), posted with a count.
#include <cerrno>
#include <vector>

#include "mr.h"
#include "mw.h"
#include "qp.h"
#include "qp_post.h"
#include "util/errors.h"

namespace rdma {

// The fast path for the common work requests (at most kPackedSges SGEs, no
// window bind, 53-bit values): the TS layer packs them into a Float64Array,
// so one Node-API call carries the whole list instead of ~20 property reads
// per WR. Send record (kSendStride doubles): wrId, opcode, flags, nsge,
// imm-or-invalidateRkey, remoteAddr, rkey, compareAdd, swap, then nsge
// times (addr, length, lkey)
namespace {
constexpr size_t kPackedSges = 4;
constexpr size_t kSendStride = 9 + 3 * kPackedSges;
constexpr size_t kRecvStride = 5;  // wrId, nsge, addr, length, lkey

bool IsU(double d, double max) { return d >= 0 && d <= max && d == double(uint64_t(d)); }

[[noreturn]] void BadField(Napi::Env env, size_t i, const char* field) {
  ThrowRange(env, std::string(field) + " of work request " + std::to_string(i) + " is out of range");
}

// addr, length, lkey at s[0..2]
ibv_sge PackedSge(Napi::Env env, size_t i, const double* s) {
  if (!IsU(s[0], 9007199254740991.0)) BadField(env, i, "sge.addr");
  if (!IsU(s[1], 0xffffffff)) BadField(env, i, "sge.length");
  if (!IsU(s[2], 0xffffffff)) BadField(env, i, "sge.lkey");
  return {uint64_t(s[0]), uint32_t(s[1]), uint32_t(s[2])};
}

// a count argument of postSendPacked(n, handles, recvs) / postRecvPacked(n)
uint32_t PackedCount(Napi::Env env, const Napi::Value& v, const char* name, size_t stride, size_t len, uint32_t max_wr) {
  if (len == 0) ThrowType(env, "setPackBuffers() was not called");
  uint32_t n = ArgU32(v, name);
  if (size_t(n) * stride > len) ThrowRange(env, "count exceeds the packed array");
  if (n > max_wr) ThrowRange(env, "count " + std::to_string(n) + " exceeds the queue's " + std::to_string(max_wr) + " work requests");
  return n;
}

// Most posts carry one or a few WRs: keep those on the stack.
template <typename T, size_t N>
struct SmallArray {
  explicit SmallArray(size_t n) : heap(n > N ? n : 0) {}
  T* data() { return heap.empty() ? stack : heap.data(); }
  T& operator[](size_t i) { return data()[i]; }
  T stack[N];
  std::vector<T> heap;
};
}  // namespace

// setPackBuffers(send: Float64Array, recv: Float64Array)
Napi::Value QueuePair::SetPackBuffers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Get(env);
  for (size_t i = 0; i < 2; i++) {
    if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      ThrowType(env, std::string(i ? "recv" : "send") + " pack must be a Float64Array");
  }
  Napi::Float64Array send = info[0].As<Napi::Float64Array>();
  Napi::Float64Array recv = info[1].As<Napi::Float64Array>();
  // the references keep both arrays (and so the data pointers) alive; they
  // are private to the JS QueuePair, which never transfers or detaches them
  send_pack_ = Napi::Persistent(send);
  recv_pack_ = Napi::Persistent(recv);
  send_pack_data_ = send.Data();
  send_pack_len_ = send.ElementLength();
  recv_pack_data_ = recv.Data();
  recv_pack_len_ = recv.ElementLength();
  return env.Undefined();
}

// postSendPacked(n, handles?, recvs?): the first n WRs of the bound send
// pack. A BIND_MW record names its window and region by index into
// `handles` (native MemoryWindow / MemoryRegion objects): mw index, mr
// index, addr, length, access, key byte (-1: the next one) in fields 4..9.
// recvs: the first `recvs` records of the recv pack are posted first
// (ibv_post_recv), in the same call: a peer's next message, answered by
// these sends, finds its receive posted; one Node-API call instead of two
// per message (each costs several microseconds under emulation). A failed
// receive post throws with `posted` 0 and `recv` true: no send was posted.
Napi::Value QueuePair::PostSendPacked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_qp* qp = Get(env);
  uint32_t n = PackedCount(env, info[0], "count", kSendStride, send_pack_len_, max_send_wr_);
  uint32_t nr = 0;
  if (info.Length() > 2 && !info[2].IsUndefined()) nr = PackedCount(env, info[2], "recvs", kRecvStride, recv_pack_len_, max_recv_wr_);
  if (n == 0) {
    if (nr > 0) PostRecvsFirst(env, qp, nr);
    return env.Undefined();
  }
  Binds binds;
  const double* d = send_pack_data_;
  SmallArray<ibv_send_wr, 8> wrs(n);
  SmallArray<ibv_sge, 8 * kPackedSges> sges(size_t(n) * kPackedSges);
  constexpr double kSafe = 9007199254740991.0;
  for (uint32_t i = 0; i < n; i++) {
    const double* r = d + size_t(i) * kSendStride;
    ibv_send_wr& wr = wrs[i];
    wr = {};
    if (!IsU(r[0], kSafe)) BadField(env, i, "wrId");
    wr.wr_id = uint64_t(r[0]);
    wr.opcode = ibv_wr_opcode(uint32_t(r[1]));
    if (!IsU(r[2], 0xffffffff)) BadField(env, i, "flags");
    wr.send_flags = uint32_t(r[2]);
    if (!IsU(r[3], kPackedSges)) BadField(env, i, "nsge");
    if (r[3] > 0) {
      ibv_sge* sg = &sges[size_t(i) * kPackedSges];
      for (int j = 0; j < int(r[3]); j++) sg[j] = PackedSge(env, i, r + 9 + 3 * j);
      wr.sg_list = sg;
      wr.num_sge = int(r[3]);
    }
    switch (wr.opcode) {
      case IBV_WR_SEND_WITH_IMM:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
        if (!IsU(r[4], 0xffffffff)) BadField(env, i, "imm");
        wr.imm_data = htobe32(uint32_t(r[4]));
        break;
      case IBV_WR_SEND_WITH_INV:
      case IBV_WR_LOCAL_INV:
        if (!IsU(r[4], 0xffffffff)) BadField(env, i, "invalidateRkey");
        wr.invalidate_rkey = uint32_t(r[4]);
        break;
      default:
        break;
    }
    switch (wr.opcode) {
      case IBV_WR_RDMA_WRITE:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
      case IBV_WR_RDMA_READ:
        if (!IsU(r[5], kSafe)) BadField(env, i, "remoteAddr");
        if (!IsU(r[6], 0xffffffff)) BadField(env, i, "rkey");
        wr.wr.rdma.remote_addr = uint64_t(r[5]);
        wr.wr.rdma.rkey = uint32_t(r[6]);
        break;
      case IBV_WR_ATOMIC_CMP_AND_SWP:
      case IBV_WR_ATOMIC_FETCH_AND_ADD:
        if (!IsU(r[5], kSafe)) BadField(env, i, "remoteAddr");
        if (!IsU(r[6], 0xffffffff)) BadField(env, i, "rkey");
        if (!IsU(r[7], kSafe)) BadField(env, i, "compareAdd");
        if (!IsU(r[8], kSafe)) BadField(env, i, "swap");
        wr.wr.atomic.remote_addr = uint64_t(r[5]);
        wr.wr.atomic.rkey = uint32_t(r[6]);
        wr.wr.atomic.compare_add = uint64_t(r[7]);
        wr.wr.atomic.swap = uint64_t(r[8]);
        break;
      case IBV_WR_BIND_MW: {
        if (!info[1].IsArray()) ThrowType(env, "handles must be an array");
        Napi::Array h = info[1].As<Napi::Array>();
        if (!IsU(r[4], 0xffffffff) || !IsU(r[5], 0xffffffff)) BadField(env, i, "bind handle index");
        if (!IsU(r[6], kSafe)) BadField(env, i, "bind.addr");
        if (!IsU(r[7], kSafe)) BadField(env, i, "bind.length");
        if (!IsU(r[8], 0xffffffff)) BadField(env, i, "bind.access");
        if (!(r[9] == -1 || IsU(r[9], 255))) BadField(env, i, "bind.keyByte");
        if (wr.num_sge) BadField(env, i, "nsge");
        SetBind(env, wr, h.Get(uint32_t(r[4])), h.Get(uint32_t(r[5])), uint64_t(r[6]), uint64_t(r[7]), uint32_t(r[8]),
                int(r[9]), binds, "bind.mw", "bind.mr");
        break;
      }
      case IBV_WR_SEND:
      case IBV_WR_SEND_WITH_IMM:
      case IBV_WR_SEND_WITH_INV:
      case IBV_WR_LOCAL_INV:
        break;
      default:
        ThrowRange(env, "opcode " + std::to_string(uint32_t(r[1])) + " is not supported by the packed path");
    }
    wr.next = i + 1 < n ? &wrs[i + 1] : nullptr;
  }
  // every send checked: the receives go first (nothing is posted when a
  // field above is out of range)
  if (nr > 0) PostRecvsFirst(env, qp, nr);
  ibv_send_wr* bad = nullptr;
  int rc = ibv_post_send(qp, wrs.data(), &bad);
  CommitBinds(binds, rc, bad, Value());
  if (rc) ThrowPost(env, "ibv_post_send", rc, bad, wrs.data(), n);
  return env.Undefined();
}

// postSendPacked's receives: a failure throws with `recv` true, `posted` 0
// (no send was posted) and `recvPosted`, the receives ibv_post_recv took
// before the one it refused
void QueuePair::PostRecvsFirst(Napi::Env env, ibv_qp* qp, uint32_t n) {
  try {
    PostPackedRecvs(env, qp, n);
  } catch (Napi::Error& e) {
    Napi::Value posted = e.Value().Get("posted");
    e.Value().Set("recvPosted", posted.IsNumber() ? posted : Napi::Number::New(env, 0));
    e.Value().Set("posted", Napi::Number::New(env, 0));
    e.Value().Set("recv", Napi::Boolean::New(env, true));
    throw;
  }
}

// postRecvPacked(n): the first n WRs of the bound recv pack
Napi::Value QueuePair::PostRecvPacked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_qp* qp = Get(env);
  uint32_t n = PackedCount(env, info[0], "count", kRecvStride, recv_pack_len_, max_recv_wr_);
  if (n > 0) PostPackedRecvs(env, qp, n);
  return env.Undefined();
}

void QueuePair::PostPackedRecvs(Napi::Env env, ibv_qp* qp, uint32_t n) {
  const double* d = recv_pack_data_;
  SmallArray<ibv_recv_wr, 8> wrs(n);
  SmallArray<ibv_sge, 8> sges(n);
  for (uint32_t i = 0; i < n; i++) {
    const double* r = d + size_t(i) * kRecvStride;
    if (!IsU(r[0], 9007199254740991.0)) BadField(env, i, "wrId");
    wrs[i] = {};
    wrs[i].wr_id = uint64_t(r[0]);
    if (r[1] == 1) {
      sges[i] = PackedSge(env, i, r + 2);
      wrs[i].sg_list = &sges[i];
      wrs[i].num_sge = 1;
    }
    wrs[i].next = i + 1 < n ? &wrs[i + 1] : nullptr;
  }
  ibv_recv_wr* bad = nullptr;
  int rc = ibv_post_recv(qp, wrs.data(), &bad);
  if (rc) ThrowPost(env, "ibv_post_recv", rc, bad, wrs.data(), n);
}

}  // namespace rdma
