import * as grpc from '@grpc/grpc-js';

export function bearer(token: string | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  return md;
}

type Method<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  cb: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientUnaryCall;

/** Calls a unary method; resolves with the response or rejects with the ServiceError. */
export function unaryCall<Req, Res>(method: Method<Req, Res>, req: Req, token?: string, timeoutMs = 10_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(req, bearer(token), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Resolves with the gRPC status code of a call that is expected to fail. */
export async function codeOf(p: Promise<unknown>): Promise<{ code: grpc.status; details: string; field: string | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    const field = e.metadata?.get('mailshare-field')[0];
    return { code: e.code, details: e.details, field: field === undefined ? undefined : String(field) };
  }
  throw new Error('call succeeded but was expected to fail');
}
