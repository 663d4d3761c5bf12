#include "memory.h"

#include <fcntl.h>
#include <linux/udmabuf.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <v8.h>

#include "util/errors.h"

namespace rdma {

struct Block {
  char* ptr;
  size_t len;
  std::atomic<int> refs;
  bool mapped;  // munmap (udmabuf, lazy allocate(), mapFile()) instead of free
};

namespace {
std::mutex g_mu;
std::map<char*, Block*> g_blocks;  // keyed by start address

void Register(Block* b) {
  std::lock_guard<std::mutex> l(g_mu);
  g_blocks[b->ptr] = b;
}

void Finalize(Napi::Env, void*, Block* b) { ReleaseBlock(b); }

size_t PageSize() { return size_t(sysconf(_SC_PAGESIZE)); }

// allocate(size, lazy = false): a zeroed, page-aligned external ArrayBuffer.
// lazy: an anonymous private mapping whose pages are not touched here, so
// none is resident until first used (by the CPU, or by the NIC through an
// on-demand paging region); else heap memory, zeroed (touched) up front.
Napi::Value Allocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) ThrowType(env, "size must be a number");
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d >= 1 && d <= double(1ull << 40)) || d != double(uint64_t(d)))
    ThrowRange(env, "size must be an integer from 1 to 2^40");
  size_t size = size_t(d);
  size_t page = PageSize();
  size_t rounded = (size + page - 1) / page * page;
  if (info.Length() > 1 && ArgBool(info[1], "lazy")) {
    void* m = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) Throw(env, "mmap", errno, std::to_string(rounded) + " bytes, anonymous");
    auto* b = new Block{static_cast<char*>(m), rounded, {1}, true};
    Register(b);
    return Napi::ArrayBuffer::New(env, m, size, Finalize, b);
  }
  void* p = nullptr;
  int rc = posix_memalign(&p, page, rounded);
  if (rc) Throw(env, "posix_memalign", rc, std::to_string(rounded) + " bytes");
  memset(p, 0, rounded);
  auto* b = new Block{static_cast<char*>(p), rounded, {1}, false};
  Register(b);
  return Napi::ArrayBuffer::New(env, p, size, Finalize, b);
}

// createUdmabuf(size): { fd, buffer } — memfd memory (sealed against
// shrinking, as udmabuf requires) turned into a dma-buf by /dev/udmabuf, and
// mapped for the CPU. The dma-buf fd is the caller's to close.
Napi::Value CreateUdmabuf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t size = ArgU32(info[0], "size");
  size_t page = PageSize();
  if (size == 0 || size % page) ThrowRange(env, "size must be a non-zero multiple of the page size (" + std::to_string(page) + ")");
  int memfd = memfd_create("node-rdma-udmabuf", MFD_ALLOW_SEALING | MFD_CLOEXEC);
  if (memfd < 0) Throw(env, "memfd_create", errno);
  auto fail = [&](const char* verb, int err, const std::string& detail = "") {
    close(memfd);
    Throw(env, verb, err, detail);
  };
  if (ftruncate(memfd, size) < 0) fail("ftruncate", errno);
  if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) fail("fcntl", errno, "F_SEAL_SHRINK");
  int dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
  if (dev < 0) fail("open", errno, "/dev/udmabuf (kernel without CONFIG_UDMABUF?)");
  udmabuf_create create = {};
  create.memfd = uint32_t(memfd);
  create.flags = UDMABUF_FLAGS_CLOEXEC;
  create.offset = 0;
  create.size = size;
  int dmabuf = ioctl(dev, UDMABUF_CREATE, &create);
  int err = errno;
  close(dev);
  if (dmabuf < 0) fail("ioctl", err, "UDMABUF_CREATE");
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  err = errno;
  close(memfd);  // the mapping and the dma-buf keep the memory
  if (p == MAP_FAILED) {
    close(dmabuf);
    Throw(env, "mmap", err, "udmabuf memfd");
  }
  auto* b = new Block{static_cast<char*>(p), size, {1}, true};
  Register(b);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", dmabuf);
  out.Set("buffer", Napi::ArrayBuffer::New(env, p, size, Finalize, b));
  return out;
}

// closeFd(fd): for the dma-buf fds handed out above
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int32_t fd = ArgI32(info[0], "fd");
  if (fd < 0) ThrowRange(info.Env(), "fd must be >= 0");
  if (close(fd) < 0) Throw(info.Env(), "close", errno);
  return info.Env().Undefined();
}

Napi::Value PageSizeJs(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(PageSize())); }

// The page-aligned range [offset, offset + length) of the memory behind
// info[0] (a buffer or view); RangeError unless it lies inside it and both
// ends are page boundaries.
char* PageRange(const Napi::CallbackInfo& info, size_t* out_len) {
  Napi::Env env = info.Env();
  char* ptr = nullptr;
  size_t len = 0;
  BufferSpan(info[0], "buffer", &ptr, &len);
  uint64_t offset = ArgU64(info[1], "offset");
  uint64_t length = ArgU64(info[2], "length");
  if (offset > len || length > len - offset)
    ThrowRange(env, "offset + length (" + std::to_string(offset) + " + " + std::to_string(length) +
                        ") must not pass the buffer's end (" + std::to_string(len) + ")");
  size_t page = PageSize();
  char* start = ptr + offset;
  if (uintptr_t(start) % page || length % page)
    ThrowRange(env, "the range must start and end at page boundaries (page size " + std::to_string(page) + ")");
  *out_len = size_t(length);
  return start;
}

// discardPages(buffer, offset, length): madvise(MADV_DONTNEED) on whole
// pages of addon memory (allocate(), mapFile()). Anonymous pages read as
// zero afterwards (each a fresh page on the next touch); a file mapping
// rereads the file. Only addon memory: V8's heap or another allocator's
// pages could hold data that must not vanish.
Napi::Value DiscardPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t len = 0;
  char* start = PageRange(info, &len);
  if (len == 0) return env.Undefined();
  Block* b = AcquireBlock(start, len);
  if (!b) ThrowRange(env, "buffer must be memory from allocate() or mapFile() (other memory may share its pages with live data)");
  int rc = madvise(start, len, MADV_DONTNEED);
  int err = errno;
  ReleaseBlock(b);
  if (rc) Throw(env, "madvise", err, "MADV_DONTNEED");
  return env.Undefined();
}

// residentPages(buffer, offset, length): how many of the range's pages are
// resident (mincore), for any page-aligned range of mapped memory.
Napi::Value ResidentPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t len = 0;
  char* start = PageRange(info, &len);
  size_t page = PageSize();
  std::vector<unsigned char> vec(len / page);
  if (len && mincore(start, len, vec.data())) Throw(env, "mincore", errno);
  size_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return Napi::Number::New(env, double(n));
}

// mapFile(fd, length, offset): a shared read-write mapping of the file
// (mmap MAP_SHARED) as an external ArrayBuffer, unmapped when the buffer is
// collected and no region covers it. The fd may be closed afterwards.
Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgI32(info[0], "fd");
  uint64_t length = ArgU64(info[1], "length");
  uint64_t offset = ArgU64(info[2], "offset");
  if (fd < 0) ThrowRange(env, "fd must be >= 0");
  if (length == 0 || length > (1ull << 40)) ThrowRange(env, "length must be an integer from 1 to 2^40");
  if (offset % PageSize()) ThrowRange(env, "offset must be a multiple of the page size (" + std::to_string(PageSize()) + ")");
  size_t page = PageSize();
  size_t rounded = (length + page - 1) / page * page;
  void* m = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(offset));
  if (m == MAP_FAILED) Throw(env, "mmap", errno, "fd " + std::to_string(fd) + ", " + std::to_string(length) + " bytes at " + std::to_string(offset));
  auto* b = new Block{static_cast<char*>(m), rounded, {1}, true};
  Register(b);
  return Napi::ArrayBuffer::New(env, m, size_t(length), Finalize, b);
}
}  // namespace

Block* AcquireBlock(void* ptr, size_t len) {
  std::lock_guard<std::mutex> l(g_mu);
  char* p = static_cast<char*>(ptr);
  auto it = g_blocks.upper_bound(p);
  if (it == g_blocks.begin()) return nullptr;
  --it;
  Block* b = it->second;
  if (p < b->ptr || p + len > b->ptr + b->len) return nullptr;
  b->refs++;
  return b;
}

void ReleaseBlock(Block* b) {
  if (--b->refs > 0) return;
  {
    std::lock_guard<std::mutex> l(g_mu);
    g_blocks.erase(b->ptr);
  }
  if (b->mapped) munmap(b->ptr, b->len);
  else free(b->ptr);
  delete b;
}

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("allocate", Napi::Function::New(env, Allocate, "allocate"));
  exports.Set("createUdmabuf", Napi::Function::New(env, CreateUdmabuf, "createUdmabuf"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("pageSize", Napi::Function::New(env, PageSizeJs, "pageSize"));
  exports.Set("discardPages", Napi::Function::New(env, DiscardPages, "discardPages"));
  exports.Set("residentPages", Napi::Function::New(env, ResidentPages, "residentPages"));
  exports.Set("mapFile", Napi::Function::New(env, MapFile, "mapFile"));
}

}  // namespace rdma

namespace rdma {
void BufferSpan(const Napi::Value& v, const char* name, char** ptr, size_t* len) {
  Napi::Env env = v.Env();
  if (v.IsArrayBuffer()) {
    auto ab = v.As<Napi::ArrayBuffer>();
    if (ab.IsDetached()) ThrowType(env, std::string(name) + " is a detached ArrayBuffer");
    *ptr = static_cast<char*>(ab.Data());
    *len = ab.ByteLength();
    return;
  }
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    if (ta.ArrayBuffer().IsDetached()) ThrowType(env, std::string(name) + " is backed by a detached ArrayBuffer");
    *ptr = static_cast<char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    *len = ta.ByteLength();
    return;
  }
  if (v.IsDataView()) {
    auto dv = v.As<Napi::DataView>();
    *ptr = static_cast<char*>(dv.ArrayBuffer().Data()) + dv.ByteOffset();
    *len = dv.ByteLength();
    return;
  }
  ThrowType(env, std::string(name) + " must be an ArrayBuffer, TypedArray, DataView or Buffer");
}
}  // namespace rdma

namespace rdma {

struct JsPin {
  std::shared_ptr<v8::BackingStore> store;
};

JsPin* PinJsBuffer(const Napi::Value& v, const char* name) {
  // a napi_value is a v8::Local<v8::Value> (Node's own v8impl converts them
  // the same way); the backing store is only reachable through V8's API
  napi_value raw = v;
  v8::Local<v8::Value> local;
  static_assert(sizeof(local) == sizeof(raw), "napi_value is not a v8::Local");
  memcpy(static_cast<void*>(&local), &raw, sizeof raw);
  std::shared_ptr<v8::BackingStore> store;
  if (local->IsArrayBuffer()) store = local.As<v8::ArrayBuffer>()->GetBackingStore();
  else if (local->IsArrayBufferView()) store = local.As<v8::ArrayBufferView>()->Buffer()->GetBackingStore();
  else ThrowType(v.Env(), std::string(name) + " must be an ArrayBuffer, TypedArray, DataView or Buffer");
  if (store->IsResizableByUserJavaScript())
    ThrowType(v.Env(), std::string(name) + " must not be a resizable ArrayBuffer (a resize would move registered pages)");
  return new JsPin{std::move(store)};
}

void UnpinJsBuffer(JsPin* pin) { delete pin; }

}  // namespace rdma
