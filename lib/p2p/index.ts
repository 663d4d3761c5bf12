/**
 * PCI peer-to-peer memory: discovery of p2pmem providers, the kernel's P2P
 * distance and mapping type between devices, choice of a provider for a set
 * of clients, allocation into the process, O_DIRECT IO and the RDMA
 * registration probe. See docs/p2p.md.
 */
export { P2pOptions, HostBridgeWhitelistEntry, Sysfs } from './sysfs';
export { PciDevice, PciIdentity, PciePortType, AcsState, PciBus, parseConfigSpace } from './pci';
export {
  P2pTopology,
  P2pDistance,
  P2pMapType,
  P2pRelation,
  HOST_BRIDGE_WHITELIST,
  cpuSupportsP2pdma,
} from './distance';
export { P2pClient, P2pClientKind, resolveClient, listClients } from './clients';
export {
  P2pProvider,
  ProviderCandidate,
  ProviderChoice,
  ChooseOptions,
  listProviders,
  getProvider,
  chooseProvider,
  p2pDistance,
} from './providers';
export { P2pMemory, P2pIoOptions, allocateP2pmem, p2pPageSize } from './memory';
