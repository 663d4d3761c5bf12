/// <reference types="node" preserve="true" />
/**
 * The ES module entry point (`import { openDevice, transport } from
 * 'node-rdma'`, or `import rdma from 'node-rdma'`): the very objects of the
 * CommonJS entry, re-exported, so that one process that uses both gets one
 * addon and one copy of each class (instanceof works across them). Node
 * finds the names in index.js with its CommonJS export detection;
 * test/unit/package.test.ts checks that every export of index.js is here.
 */
import * as lib from './index.js';

export * from './index.js';
export default lib;
