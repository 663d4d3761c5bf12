// What QueuePair's two post paths (qp.cc: the general one, qp_packed.cc: the
// packed fast path) share: window binds committed once posted, and the
// error of a failed post.
#pragma once
#include <infiniband/verbs.h>
#include <napi.h>
#include <string>
#include <vector>

#include "util/errors.h"

namespace rdma {

class MemoryWindow;

// A window bind in a list being posted: its rkey is committed, and the
// window holds the region and the QP natively, once it was posted.
struct PendingBind {
  MemoryWindow* window;
  ibv_mw* mw;
  uint32_t rkey;
  Napi::Object mr;  // the native MemoryRegion object
};
using Binds = std::vector<PendingBind>;

// A BIND_MW work request. The new rkey keeps the window's index (upper 24
// bits) and changes the key byte: the caller's (e.g. random, keyByte >= 0)
// or the next one. mw_obj / mr_obj: the native window and region objects.
void SetBind(Napi::Env env, ibv_send_wr& wr, const Napi::Value& mw_obj, const Napi::Value& mr_obj, uint64_t addr,
             uint64_t length, uint32_t access, int key_byte, Binds& binds, const char* mw_name, const char* mr_name);

// After ibv_post_send returned rc (bad: where it stopped): each posted bind
// commits its window's rkey, and the window holds its region and `qp`.
void CommitBinds(const Binds& binds, int rc, ibv_send_wr* bad, Napi::Object qp);

// A failed ibv_post_send/ibv_post_recv: name the work request it stopped at
// (the ones before it were posted).
// `posted` on the error says how many were posted, for the TS layer to
// account for exactly those (their binds, their completions).
template <typename WR>
[[noreturn]] void ThrowPost(Napi::Env env, const char* verb, int rc, const WR* bad, const WR* first, size_t n) {
  size_t idx = bad ? size_t(bad - first) : 0;
  Napi::Error err = MakeError(env, verb, rc, "work request " + std::to_string(idx) + " of " + std::to_string(n));
  err.Value().Set("posted", Napi::Number::New(env, double(idx)));
  throw err;
}

}  // namespace rdma
