// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/**
 * The layer rule (see README "Architecture"): domain ← store ← services ← bin;
 * agent, gateway and cli are clients of the gRPC API and use only domain and
 * gen. Breaking it fails `npm run lint`, which CI runs.
 */
export const layerZones = [
  { target: './src/domain', from: './src', except: ['./domain'], message: 'src/domain is pure: it imports nothing else from src/.' },
  { target: './src/store', from: ['./src/services', './src/bin', './src/cli', './src/agent', './src/gateway', './src/gen'], message: 'store may import only domain (and config types).' },
  { target: './src/services', from: ['./src/bin', './src/cli', './src/agent', './src/gateway'], message: 'services may not import bin or the API clients.' },
  { target: ['./src/agent', './src/gateway', './src/cli', './src/sidecar'], from: ['./src/store', './src/services', './src/bin'], message: 'agent, gateway, sidecar and cli are clients of the gRPC API: import only domain and gen.' },
  { target: './src/metrics', from: './src', except: ['./domain', './metrics'], message: 'src/metrics (Prometheus registries, the HTTP listener) imports only domain: every layer may use it.' },
  { target: './src/config', from: ['./src/store', './src/services', './src/bin', './src/cli', './src/agent', './src/gateway'], message: 'config may import only domain.' },
];

const pureDomain = {
  paths: ['etcd3', '@grpc/grpc-js', 'pino'].map((name) => ({ name, message: 'src/domain is pure (no I/O).' })),
  patterns: [{ group: ['node:*', 'fs', 'net', 'http', 'child_process', 'os'], message: 'src/domain is pure (no I/O).' }],
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'src/gen/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: { 'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })] },
    rules: {
      'import-x/no-restricted-paths': ['error', { zones: layerZones }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'no-console': 'error',
    },
  },
  {
    files: ['src/domain/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', pureDomain],
      'no-restricted-globals': ['error', 'setTimeout', 'setInterval', 'process', 'Buffer'],
      'no-restricted-properties': ['error', { object: 'Date', property: 'now', message: 'src/domain is pure: pass time in.' }],
    },
  },
  {
    files: ['src/agent/**/*.ts', 'src/gateway/**/*.ts', 'src/cli/**/*.ts', 'src/sidecar/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: [{ name: 'etcd3', message: 'clients talk to the gRPC API, never to etcd.' }] }] },
  },
  {
    files: ['src/bin/**/*.ts', 'src/cli/**/*.ts', 'test/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
);
