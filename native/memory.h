// Memory the addon allocates for the NIC: page-aligned blocks handed to JS as
// external ArrayBuffers. A block is reference counted: the ArrayBuffer holds
// one reference and every MemoryRegion over it holds another, so the memory
// stays alive while registered even if JS drops (or detaches) the buffer.
// Also the udmabuf helper (memfd memory exported as a dma-buf fd).
#pragma once
#include <napi.h>
#include <cstddef>

namespace rdma {

struct Block;

// The block containing [ptr, ptr+len) if the addon allocated it (with a new
// reference taken), else nullptr.
Block* AcquireBlock(void* ptr, size_t len);
void ReleaseBlock(Block* b);

void InitMemory(Napi::Env env, Napi::Object exports);

}  // namespace rdma

namespace rdma {
// The bytes behind an ArrayBuffer, TypedArray, DataView or Buffer; throws a
// TypeError naming `name` for anything else (or a detached buffer).
void BufferSpan(const Napi::Value& v, const char* name, char** ptr, size_t* len);
}  // namespace rdma

namespace rdma {
// Holds the V8 backing store behind a JS buffer (ArrayBuffer or view) while
// it is registered: transferring the ArrayBuffer away (structuredClone with
// transfer) detaches it, and the new owner may free the memory when it is
// collected; this reference keeps the memory itself alive until deregistration.
// Throws a TypeError naming `name` for a resizable ArrayBuffer (resize would
// move the pages the NIC was given).
struct JsPin;
JsPin* PinJsBuffer(const Napi::Value& v, const char* name);
void UnpinJsBuffer(JsPin* pin);
}  // namespace rdma
