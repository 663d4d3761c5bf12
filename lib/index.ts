/** node-rdma's public surface. */
export { RdmaError } from './errors';
export * from './verbs';
