import path from 'node:path';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { fromBinary } from '@bufbuild/protobuf';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { type DescriptorProto, type FileDescriptorProto, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { DESCRIPTOR_SET_BASE64 } from '../gen/descriptors.js';

/** One .proto file as protoc compiled it: its exact bytes and what it imports. */
interface ProtoFile {
  readonly name: string;
  readonly bytes: Buffer;
  readonly dependencies: readonly string[];
}

/**
 * The served .proto files (protoc's descriptor set, generated with the
 * code) indexed for reflection: by file name, by every fully qualified
 * symbol they define (messages, nested ones, enums, services, methods,
 * extensions), and the services.
 */
export class DescriptorIndex {
  readonly files = new Map<string, ProtoFile>();
  readonly symbols = new Map<string, string>();
  /** "containing.Type" → extension field numbers → file. */
  readonly extensions = new Map<string, Map<number, string>>();
  readonly services: string[] = [];

  constructor(set: Uint8Array) {
    // FileDescriptorSet { repeated FileDescriptorProto file = 1; }: each file's bytes kept as protoc wrote them.
    const reader = new BinaryReader(set);
    while (reader.pos < reader.len) {
      const [field, wire] = reader.tag();
      if (field !== 1 || wire !== WireType.LengthDelimited) {
        reader.skip(wire);
        continue;
      }
      const bytes = Buffer.from(reader.bytes());
      const file = fromBinary(FileDescriptorProtoSchema, bytes);
      this.files.set(file.name, { name: file.name, bytes, dependencies: file.dependency });
      this.index(file);
    }
  }

  /** The file and everything it imports, transitively (each once, the file first). */
  withDependencies(name: string): ProtoFile[] {
    const out: ProtoFile[] = [];
    const seen = new Set<string>();
    const visit = (n: string): void => {
      const f = this.files.get(n);
      if (!f || seen.has(n)) return;
      seen.add(n);
      out.push(f);
      for (const d of f.dependencies) visit(d);
    };
    visit(name);
    return out;
  }

  private index(file: FileDescriptorProto): void {
    const pkg = file.package ? `${file.package}.` : '';
    const define = (fqn: string): void => void this.symbols.set(fqn, file.name);
    const message = (m: DescriptorProto, prefix: string): void => {
      const fqn = `${prefix}${m.name}`;
      define(fqn);
      for (const f of m.field) define(`${fqn}.${f.name}`);
      for (const o of m.oneofDecl) define(`${fqn}.${o.name}`);
      for (const e of m.enumType) {
        define(`${fqn}.${e.name}`);
        for (const v of e.value) define(`${fqn}.${v.name}`);
      }
      for (const n of m.nestedType) message(n, `${fqn}.`);
      for (const x of m.extension) this.extension(x.extendee, x.number, file.name);
    };
    for (const m of file.messageType) message(m, pkg);
    for (const e of file.enumType) {
      define(`${pkg}${e.name}`);
      for (const v of e.value) define(`${pkg}${v.name}`);
    }
    for (const s of file.service) {
      define(`${pkg}${s.name}`);
      this.services.push(`${pkg}${s.name}`);
      for (const m of s.method) define(`${pkg}${s.name}.${m.name}`);
    }
    for (const x of file.extension) this.extension(x.extendee, x.number, file.name);
  }

  private extension(extendee: string, number: number, file: string): void {
    const type = extendee.replace(/^\./, '');
    const byNumber = this.extensions.get(type) ?? new Map<number, string>();
    byNumber.set(number, file);
    this.extensions.set(type, byNumber);
  }
}

interface ReflectionRequest {
  host?: string;
  message_request?: string;
  file_by_filename?: string;
  file_containing_symbol?: string;
  file_containing_extension?: { containing_type?: string; extension_number?: number };
  all_extension_numbers_of_type?: string;
  list_services?: string;
}

/** The answer to one reflection request (its `message_response` member). */
export function answer(index: DescriptorIndex, req: ReflectionRequest): Record<string, unknown> {
  const files = (name: string | undefined): Record<string, unknown> =>
    name === undefined ? notFound('no such file') : { file_descriptor_response: { file_descriptor_proto: index.withDependencies(name).map((f) => f.bytes) } };
  const notFound = (message: string): Record<string, unknown> => ({ error_response: { error_code: grpc.status.NOT_FOUND, error_message: message } });
  switch (req.message_request) {
    case 'file_by_filename':
      return index.files.has(req.file_by_filename ?? '') ? files(req.file_by_filename) : notFound(`file "${req.file_by_filename}" not found`);
    case 'file_containing_symbol': {
      const symbol = (req.file_containing_symbol ?? '').replace(/^\./, '');
      const file = index.symbols.get(symbol);
      return file ? files(file) : notFound(`symbol "${symbol}" not found`);
    }
    case 'file_containing_extension': {
      const x = req.file_containing_extension ?? {};
      const file = index.extensions.get((x.containing_type ?? '').replace(/^\./, ''))?.get(x.extension_number ?? 0);
      return file ? files(file) : notFound(`extension ${x.extension_number} of "${x.containing_type}" not found`);
    }
    case 'all_extension_numbers_of_type': {
      const type = (req.all_extension_numbers_of_type ?? '').replace(/^\./, '');
      if (!index.symbols.has(type)) return notFound(`type "${type}" not found`);
      return { all_extension_numbers_response: { base_type_name: type, extension_number: [...(index.extensions.get(type)?.keys() ?? [])] } };
    }
    case 'list_services':
      return { list_services_response: { service: index.services.map((name) => ({ name })) } };
    default:
      return { error_response: { error_code: grpc.status.INVALID_ARGUMENT, error_message: 'message_request: none of the known requests' } };
  }
}

/**
 * Server reflection (grpc.reflection.v1 and v1alpha) from the real file
 * descriptors of every service the coordinator serves (one file per .proto,
 * with their imports: google/protobuf/timestamp.proto, grpc.health.v1), so
 * grpcurl, grpcui, Postman and Evans can describe and call every method.
 * `wrap` puts each handler behind the coordinator's authentication.
 */
export function addReflection(server: grpc.Server, wrap: (handler: grpc.handleBidiStreamingCall<ReflectionRequest, unknown>) => grpc.handleBidiStreamingCall<ReflectionRequest, unknown>): void {
  const index = new DescriptorIndex(Buffer.from(DESCRIPTOR_SET_BASE64, 'base64'));
  const require = createRequire(import.meta.url);
  const protos = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
  const handler: grpc.handleBidiStreamingCall<ReflectionRequest, unknown> = (call) => {
    call.on('data', (req: ReflectionRequest) => {
      call.write({ valid_host: req.host ?? '', original_request: req, ...answer(index, req) });
    });
    call.on('end', () => call.end());
    call.on('error', () => undefined);
  };
  for (const version of ['v1', 'v1alpha']) {
    const pkg = grpc.loadPackageDefinition(loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [protos], keepCase: true, longs: Number, enums: Number, defaults: true, oneofs: true }));
    const reflection = (pkg.grpc as grpc.GrpcObject).reflection as grpc.GrpcObject;
    const svc = (reflection[version] as grpc.GrpcObject).ServerReflection as grpc.ServiceClientConstructor;
    server.addService(svc.service, { ServerReflectionInfo: wrap(handler) });
  }
}
