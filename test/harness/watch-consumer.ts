/**
 * A separate process that watches events and reports on stdout:
 * "ready" once the watch is established, "events N" as they arrive, and
 * "error CODE DETAILS" when the stream fails. Tests SIGSTOP it to make a
 * consumer that really stops reading its socket.
 */
import * as grpc from '@grpc/grpc-js';
import { EventServiceClient, type WatchResponse } from '../../src/gen/mailshare/v1/events.js';

const [address, token, tenant, kinds] = process.argv.slice(2);
const client = new EventServiceClient(address!, grpc.credentials.createInsecure());
const md = new grpc.Metadata();
md.set('authorization', `Bearer ${token}`);
const stream = client.watch({ fromRevision: 0, kinds: (kinds ?? 'mailbox').split(','), tenant: tenant ?? '' }, md);
let n = 0;
stream.on('metadata', () => process.stdout.write('ready\n'));
stream.on('data', (r: WatchResponse) => {
  n += r.events.length;
  process.stdout.write(`events ${n}\n`);
});
stream.on('error', (e: grpc.ServiceError) => {
  process.stdout.write(`error ${e.code} ${e.details}\n`);
  process.exit(0);
});
