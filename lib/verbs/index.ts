/** The verbs layer: one class per verbs object. */
export * from './constants';
export { Device, DeviceAttributes, DeviceInfo, GidEntry, AsyncEvent, PortAttributes, forkSafety, listDevices, openDevice } from './device';
export { ProtectionDomain, DmabufRange } from './pd';
export {
  MemoryRegion, MemoryRegionKind, MemoryWindow, Udmabuf, Sge, AllocateOptions, allocate, discardPages, mapFile, pageSize, residentPages,
} from './memory';
export { CompletionBatch, CompletionQueue, CompletionQueueOptions, WorkCompletion } from './cq';
export { PreparedSend } from './prepared';
export {
  QueuePair, QueuePairInit, QpAttr, QpQuery, QpCap, AltPath, PathMigState, PathMigStateName, AhAttr, Grh, SendWorkRequest, RecvWorkRequest, AddressHandle,
  SharedReceiveQueue, SharedReceiveQueueInit,
} from './qp';
export { CmId, ConnParam, CmAddress, CmInfo, UdPeer } from './cm';
export { Resource } from './resource';
export { AsyncEventType, CmIdEvents, CompletionQueueEvents, DeviceEvents } from './events';
