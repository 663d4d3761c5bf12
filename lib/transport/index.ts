/** The RTRS-style IO transport: wire protocol, path policies, reconnect backoff. */
export * from './protocol';
export * from './policy';
export * from './backoff';
