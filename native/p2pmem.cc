#include "p2pmem.h"

#include <fcntl.h>
#include <infiniband/verbs.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "util/errors.h"

namespace rdma {

namespace {

// One live mapping. Owned by the ArrayBuffer's finalizer, which always runs
// eventually (also after an explicit unmap + detach): it deletes the record
// and unmaps only if nobody did so before.
struct Mapping {
  void* addr;
  size_t length;
  bool unmapped;
};

// Live mappings by address, process-wide (worker threads share the address
// space), so an explicit unmap can find the record of an ArrayBuffer.
std::mutex g_mutex;
std::unordered_map<void*, Mapping*>& Live() {
  static auto* live = new std::unordered_map<void*, Mapping*>();
  return *live;
}

void FinalizeMapping(Napi::Env, void*, Mapping* m) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!m->unmapped) {
      munmap(m->addr, m->length);
      m->unmapped = true;
      auto it = Live().find(m->addr);
      if (it != Live().end() && it->second == m) Live().erase(it);
    }
  }
  delete m;
}

size_t PageSize() {
  long ps = sysconf(_SC_PAGESIZE);
  return ps > 0 ? static_cast<size_t>(ps) : 4096;
}

Napi::ArrayBuffer ArgArrayBuffer(const Napi::Value& v, const char* name) {
  if (!v.IsArrayBuffer()) ThrowType(v.Env(), std::string(name) + " must be an ArrayBuffer");
  return v.As<Napi::ArrayBuffer>();
}

// p2pmemMap(path, length): MAP_SHARED with offset 0 (the kernel refuses
// private and offset mappings of p2pmem/allocate with EINVAL); each mmap
// allocates `length` bytes from the provider's pool, freed on munmap.
Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info[0], "path");
  uint64_t length = ArgU64(info[1], "length");
  size_t ps = PageSize();
  if (length == 0 || length % ps != 0)
    ThrowRange(env, "length must be a positive multiple of the page size (" + std::to_string(ps) + "), got " +
                        std::to_string(length));
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) Throw(env, "open", errno, path);
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);  // the mapping keeps the file referenced
  if (addr == MAP_FAILED) Throw(env, "mmap", err, path + " (" + std::to_string(length) + " bytes)");

  auto* m = new Mapping{addr, static_cast<size_t>(length), false};
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    Live()[addr] = m;
  }
  try {
    return Napi::ArrayBuffer::New(env, addr, static_cast<size_t>(length), FinalizeMapping, m);
  } catch (...) {
    std::lock_guard<std::mutex> lock(g_mutex);
    Live().erase(addr);
    munmap(addr, length);
    delete m;
    throw;
  }
}

// p2pmemUnmap(arrayBuffer): detaches the ArrayBuffer (every view of it
// becomes zero-length, so JS can never touch unmapped memory), then munmaps,
// which returns the memory to the provider's pool.
Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer ab = ArgArrayBuffer(info[0], "arrayBuffer");
  void* addr = ab.Data();
  size_t length = 0;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = addr ? Live().find(addr) : Live().end();
    if (it == Live().end() || it->second->length != ab.ByteLength())
      Throw(env, "munmap", EINVAL, "arrayBuffer is not a live p2pmem mapping (already freed?)");
    length = it->second->length;
    it->second->unmapped = true;  // the finalizer now only frees the record
    Live().erase(it);
  }
  ab.Detach();
  if (munmap(addr, length) != 0) Throw(env, "munmap", errno);
  return env.Undefined();
}

Napi::Value IsMapped(const Napi::CallbackInfo& info) {
  Napi::ArrayBuffer ab = ArgArrayBuffer(info[0], "arrayBuffer");
  void* addr = ab.Data();
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = addr ? Live().find(addr) : Live().end();
  return Napi::Boolean::New(info.Env(), it != Live().end() && it->second->length == ab.ByteLength());
}

struct VerbsGuard {
  ibv_device** list = nullptr;
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ~VerbsGuard() {
    if (pd) ibv_dealloc_pd(pd);
    if (ctx) ibv_close_device(ctx);
    if (list) ibv_free_device_list(list);
  }
};

// tryRegisterP2pmem(deviceName, arrayBuffer, offset, length): registers
// [offset, offset+length) of the buffer with the named RDMA device and
// deregisters it at once. Returns true when the kernel accepted it.
Napi::Value TryRegister(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info[0], "deviceName");
  Napi::ArrayBuffer ab = ArgArrayBuffer(info[1], "arrayBuffer");
  uint64_t offset = info[2].IsUndefined() ? 0 : ArgU64(info[2], "offset");
  size_t total = ab.ByteLength();
  if (!ab.Data() || total == 0) Throw(env, "ibv_reg_mr", EINVAL, "arrayBuffer is detached or empty");
  if (offset > total) ThrowRange(env, "offset is beyond the end of the buffer");
  uint64_t length = info[3].IsUndefined() ? total - offset : ArgU64(info[3], "length");
  if (length == 0 || offset + length > total) ThrowRange(env, "length must be positive and fit in the buffer");

  VerbsGuard g;
  int n = 0;
  errno = 0;
  g.list = ibv_get_device_list(&n);
  if (!g.list) Throw(env, "ibv_get_device_list", errno ? errno : ENODEV, "no RDMA devices");
  ibv_device* dev = nullptr;
  for (int i = 0; i < n; i++)
    if (name == ibv_get_device_name(g.list[i])) dev = g.list[i];
  if (!dev) Throw(env, "ibv_open_device", ENODEV, "no RDMA device named '" + name + "'");
  g.ctx = ibv_open_device(dev);
  if (!g.ctx) Throw(env, "ibv_open_device", errno ? errno : ENODEV, name);
  g.pd = ibv_alloc_pd(g.ctx);
  if (!g.pd) Throw(env, "ibv_alloc_pd", errno ? errno : ENOMEM, name);
  int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
  errno = 0;
  ibv_mr* mr = ibv_reg_mr(g.pd, static_cast<char*>(ab.Data()) + offset, length, access);
  if (!mr) {
    int err = errno ? errno : EINVAL;
    if (err == EFAULT || err == EREMOTEIO || err == EOPNOTSUPP) {
      Throw(env, "ibv_reg_mr", err,
            "this kernel does not support RDMA registration of PCI peer-to-peer memory (p2pmem) on " + name +
                ": ib_umem_get() pins user pages without FOLL_PCI_P2PDMA, so get_user_pages refuses the "
                "provider's ZONE_DEVICE P2PDMA pages. Mainline Linux has no such support (the 'Enable P2PDMA "
                "in Userspace RDMA' series was not merged); use the p2pmem for O_DIRECT NVMe IO, or export "
                "device memory as a dma-buf and register it with ibv_reg_dmabuf_mr where the driver allows");
    }
    Throw(env, "ibv_reg_mr", err, name + ", " + std::to_string(length) + " bytes of p2pmem");
  }
  int rc = ibv_dereg_mr(mr);
  if (rc != 0) Throw(env, "ibv_dereg_mr", rc);
  return Napi::Boolean::New(env, true);
}

}  // namespace

void InitP2pmem(Napi::Env env, Napi::Object exports) {
  exports.Set("p2pmemPageSize", Napi::Number::New(env, static_cast<double>(PageSize())));
  exports.Set("p2pmemMap", Napi::Function::New(env, Map, "p2pmemMap"));
  exports.Set("p2pmemUnmap", Napi::Function::New(env, Unmap, "p2pmemUnmap"));
  exports.Set("p2pmemIsMapped", Napi::Function::New(env, IsMapped, "p2pmemIsMapped"));
  exports.Set("tryRegisterP2pmem", Napi::Function::New(env, TryRegister, "tryRegisterP2pmem"));
}

}  // namespace rdma
