/**
 * nimbus runtime for Node.js Lambda functions (CommonJS, Node 18+, no dependencies).
 *
 * The nimbus server starts this as `node bootstrap.js` with the working
 * directory set to $LAMBDA_TASK_ROOT.  It loads the handler named by $_HANDLER
 * (CommonJS via require, ES modules via import()) once, then loops over the
 * Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API (`GET /invocation/next`,
 * `POST /invocation/{id}/response|error`, `POST /init/error`), reproducing what
 * AWS's Node.js runtime (aws-lambda-ric) does: async, callback and
 * context.succeed/fail/done handlers, callbackWaitsForEmptyEventLoop, the
 * context object, error bodies, error types and messages, and console output as
 * `<ISO time>\t<request id>\t<LEVEL>\t<message>`.
 *
 * It is hand-written instead of using aws-lambda-ric because that client is
 * heavier to start (a native curl-based addon plus its module graph).  This
 * file loads only `net` beyond what Node has already loaded and speaks
 * HTTP/1.1 itself over one keep-alive socket, which is unref'd while a handler
 * runs so that "wait for an empty event loop" works as on Lambda.
 * Not supported: response streaming (awslambda.streamifyResponse) and
 * AWS_LAMBDA_LOG_FORMAT=JSON.
 */

'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');

const RUNTIME = '/2018-06-01/runtime';
const BEFORE_EXIT = Symbol.for('aws.lambda.beforeExit');
const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');
const TENANT_ID = Symbol.for('aws.lambda.runtime.tenantId');

// ---------------------------------------------------------------------------
// Runtime API client: HTTP/1.1 over one keep-alive TCP connection.
// ---------------------------------------------------------------------------

class RuntimeAPIError extends Error {}

class RuntimeClient {
  constructor(address) {
    const colon = address.lastIndexOf(':');
    const port = colon > 0 ? address.slice(colon + 1) : '';
    this.address = address;
    this.host = (/^\d+$/.test(port) ? address.slice(0, colon) : address).replace(/^\[|\]$/g, '');
    this.port = /^\d+$/.test(port) ? parseInt(port, 10) : 80;
    this.sock = null;
    this.buf = null; // unparsed bytes
    this.pending = null; // the request waiting for its response
  }

  /** Resolve to {status, headers (lower-case names), body (Buffer)}. */
  request(method, pathname, body, headers) {
    let head = `${method} ${pathname} HTTP/1.1\r\nHost: ${this.address}\r\nUser-Agent: nimbus-nodejs/${process.version}\r\n`;
    for (const name in headers || {}) head += `${name}: ${headers[name]}\r\n`;
    if (body !== undefined) head += `Content-Length: ${body.length}\r\n`;
    head = Buffer.from(head + '\r\n', 'latin1');
    const data = body && body.length ? Buffer.concat([head, body]) : head;
    return new Promise((resolve, reject) => {
      this._send({ method, pathname, data, resolve, reject, attempt: 0 });
    });
  }

  _send(req) {
    req.reused = this.sock !== null;
    req.got = false;
    req.head = null;
    if (!req.reused) this._connect();
    this.pending = req;
    this.sock.ref();
    this.sock.write(req.data);
  }

  _connect() {
    const sock = require('net').createConnection({ host: this.host, port: this.port });
    sock.setNoDelay(true);
    sock.on('data', (chunk) => this._onData(sock, chunk));
    sock.on('error', (err) => this._onClose(sock, err));
    sock.on('close', () => this._onClose(sock, null));
    this.sock = sock;
    this.buf = null;
  }

  _onClose(sock, err) {
    if (sock !== this.sock) return;
    this.sock = null;
    const req = this.pending;
    if (!req) return; // closed while idle: reconnect on the next request
    if (req.head && req.untilClose) {
      this._finish(Buffer.concat(req.parts), true);
      return;
    }
    this.pending = null;
    if (req.reused && !req.got && req.attempt === 0) {
      // A kept-alive connection the server closed while idle: retry once.
      req.attempt = 1;
      this._send(req);
      return;
    }
    req.reject(new RuntimeAPIError(`${req.method} ${req.pathname}: Runtime API at ${this.address}: ` +
      (err ? err.message : 'connection closed')));
  }

  _onData(sock, chunk) {
    const req = this.pending;
    if (sock !== this.sock || !req) return;
    req.got = true;
    if (req.head && (req.length !== undefined || req.untilClose)) {
      req.parts.push(chunk); // body bytes: collect, join once
      req.have += chunk.length;
      if (req.length !== undefined && req.have >= req.length) {
        const all = Buffer.concat(req.parts);
        this.buf = all.subarray(req.length);
        this._finish(all.subarray(0, req.length), false);
      }
      return;
    }
    this.buf = this.buf && this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    try {
      this._parse(req);
    } catch (err) {
      this.pending = null;
      this.sock = null;
      sock.destroy();
      req.reject(new RuntimeAPIError(`${req.method} ${req.pathname}: bad response from the Runtime API: ${err.message}`));
    }
  }

  _parse(req) {
    while (!req.head) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = this.buf.toString('latin1', 0, end).split('\r\n');
      this.buf = this.buf.subarray(end + 4);
      const [version, code] = lines[0].split(' ');
      const status = parseInt(code, 10);
      if (!(status >= 100)) throw new Error(`bad status line ${JSON.stringify(lines[0])}`);
      if (status < 200) continue; // interim response
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i].indexOf(':');
        if (colon <= 0) continue;
        const name = lines[i].slice(0, colon).trim().toLowerCase();
        const value = lines[i].slice(colon + 1).trim();
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
      }
      const connection = (headers.connection || '').toLowerCase();
      req.head = { status, headers };
      req.close = connection.includes('close') || (version === 'HTTP/1.0' && !connection.includes('keep-alive'));
      if ((headers['transfer-encoding'] || '').toLowerCase().includes('chunked')) {
        req.chunked = true;
        req.parts = [];
      } else if (headers['content-length'] !== undefined || req.method === 'HEAD' || status === 204 || status === 304) {
        req.length = req.method === 'HEAD' || status === 204 || status === 304 ? 0 : parseInt(headers['content-length'], 10);
        if (!(req.length >= 0)) throw new Error('bad Content-Length');
        req.parts = [this.buf];
        req.have = this.buf.length;
        this.buf = null;
        if (req.have >= req.length) {
          const all = req.parts[0];
          this.buf = all.subarray(req.length);
          this._finish(all.subarray(0, req.length), false);
        }
        return;
      } else {
        req.untilClose = true;
        req.parts = [this.buf];
        req.have = this.buf.length;
        this.buf = null;
        return;
      }
    }
    // chunked body
    for (;;) {
      const eol = this.buf.indexOf('\r\n');
      if (eol < 0) return;
      if (req.trailers) {
        this.buf = this.buf.subarray(eol + 2);
        if (eol === 0) {
          this._finish(Buffer.concat(req.parts), false);
          return;
        }
        continue;
      }
      const size = parseInt(this.buf.toString('latin1', 0, eol).split(';')[0].trim(), 16);
      if (!(size >= 0)) throw new Error('bad chunk size');
      if (size === 0) {
        req.trailers = true;
        this.buf = this.buf.subarray(eol + 2);
        continue;
      }
      if (this.buf.length < eol + 2 + size + 2) return;
      req.parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
      this.buf = this.buf.subarray(eol + 2 + size + 2);
    }
  }

  _finish(body, closed) {
    const req = this.pending;
    this.pending = null;
    if (closed || req.close) {
      if (this.sock) this.sock.destroy();
      this.sock = null;
      this.buf = null;
    } else {
      this.sock.unref(); // idle: must not keep the event loop alive
    }
    req.resolve({ status: req.head.status, headers: req.head.headers, body });
  }
}

// ---------------------------------------------------------------------------
// Errors, as aws-lambda-ric formats them
// ---------------------------------------------------------------------------

function runtimeError(name, base) {
  const cls = base || class extends Error {};
  Object.defineProperty(cls, 'name', { value: name });
  cls.prototype.name = `Runtime.${name}`;
  return cls;
}
const ImportModuleError = runtimeError('ImportModuleError');
const HandlerNotFound = runtimeError('HandlerNotFound');
const MalformedHandlerName = runtimeError('MalformedHandlerName');
const UserCodeSyntaxError = runtimeError('UserCodeSyntaxError');
const NodeJsExit = runtimeError('NodeJsExit', class extends Error {
  constructor() {
    super('The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly caused by a Promise that was never settled. For more information, see https://nodejs.org/docs/latest/api/process.html#exit-codes');
  }
});
const UnhandledPromiseRejection = runtimeError('UnhandledPromiseRejection', class extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
});

function isErrorLike(obj) {
  return obj && obj.name && obj.message && obj.stack && typeof obj.name === 'string' &&
    typeof obj.message === 'string' && typeof obj.stack === 'string';
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

/** The body posted to /invocation/{id}/error and /init/error. */
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      return {
        errorType: error.name?.replaceAll('\x7F', '%7F'),
        errorMessage: error.message?.replaceAll('\x7F', '%7F'),
        trace: error.stack.replaceAll('\x7F', '%7F').split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: error.toString(), trace: [] };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

function withEnumerableProperties(value) {
  if (value instanceof Error) {
    const ret = Object.assign({ errorType: value.name, errorMessage: value.message, code: value.code }, value);
    if (typeof value.stack === 'string') ret.stack = value.stack.split('\n');
    return ret;
  }
  return value;
}

/** The error as logged after "Invoke Error" / "Uncaught Exception" (always starts with a tab). */
function toFormatted(error) {
  try {
    return '\t' + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch (_) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

function logError(message, err) {
  console.error(message, toFormatted(intoError(err)));
}

// ---------------------------------------------------------------------------
// console -> "<time>\t<request id>\t<LEVEL>\t<message>" on stdout
// ---------------------------------------------------------------------------

function patchConsole() {
  const priority = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };
  const minimum = priority[(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || 1;
  const nop = () => {};
  const logger = (level) => (priority[level] < minimum ? nop : (message, ...params) => {
    process.stdout.write(`${new Date().toISOString()}\t${global[REQUEST_ID]}\t${level}\t${util.format(message, ...params)}\n`);
  });
  console.trace = logger('TRACE');
  console.debug = logger('DEBUG');
  console.info = logger('INFO');
  console.log = console.info;
  console.warn = logger('WARN');
  console.error = logger('ERROR');
  console.fatal = logger('FATAL');
}

// ---------------------------------------------------------------------------
// Loading the handler (same search order as aws-lambda-ric)
// ---------------------------------------------------------------------------

function hasFolderPackageJsonTypeModule(folder) {
  if (folder.endsWith('/node_modules')) return false;
  const pj = path.join(folder, '/package.json');
  if (fs.existsSync(pj)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(pj));
      if (pkg) return pkg.type === 'module';
    } catch (e) {
      console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
      return false;
    }
  }
  if (folder === '/') return false;
  return hasFolderPackageJsonTypeModule(path.resolve(folder, '..'));
}

function tryRequireFile(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function tryImport(file) {
  return fs.existsSync(file) ? import(require('url').pathToFileURL(file).href) : undefined;
}

async function loadModule(appRoot, moduleRoot, module) {
  const base = path.resolve(appRoot, moduleRoot, module);
  const extensionless = tryRequireFile(base);
  if (extensionless) return extensionless;
  const typeModule = fs.existsSync(base + '.js') && hasFolderPackageJsonTypeModule(path.dirname(base + '.js'));
  if (!typeModule) {
    const loaded = tryRequireFile(base + '.js');
    if (loaded) return loaded;
  }
  const loaded = (typeModule && (await tryImport(base + '.js'))) ||
    (await tryImport(base + '.mjs')) ||
    tryRequireFile(base + '.cjs');
  if (loaded) return loaded;
  return require(require.resolve(module, { paths: [appRoot, moduleRoot] }));
}

async function loadHandler(appRoot, fullHandler) {
  if (fullHandler.includes('..')) {
    throw new MalformedHandlerName(`'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`);
  }
  const handlerString = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(handlerString));
  const match = handlerString.match(/^([^.]*)\.(.*)$/);
  if (!match) throw new MalformedHandlerName('Bad handler');
  const [, module, handlerPath] = match;

  let app;
  try {
    app = await loadModule(appRoot, moduleRoot, module);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }
  const handler = handlerPath.split('.').reduce((obj, key) => obj && obj[key], app);
  if (!handler) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof handler !== 'function') throw new HandlerNotFound(`${fullHandler} is not a function`);
  return handler;
}

// ---------------------------------------------------------------------------
// The invoke loop
// ---------------------------------------------------------------------------

const setBeforeExit = (listener) => (global[BEFORE_EXIT] = listener);
const resetBeforeExit = () => (global[BEFORE_EXIT] = () => {});

function headerValue(value) {
  return String(value).replace(/[^\x20-\x7e]/g, '?');
}

function fatal(err) {
  process.stderr.write(`nimbus runtime: ${err && err.message}\n`);
  process.exit(1);
}

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

class Runtime {
  constructor(client, handler, errorCallbacks) {
    this.client = client;
    this.handler = handler;
    this.isAsync = handler.constructor && handler.constructor.name === 'AsyncFunction';
    this.errorCallbacks = errorCallbacks;
  }

  scheduleIteration() {
    setImmediate(() => {
      this.handleOnce().catch((err) => {
        if (err instanceof RuntimeAPIError) fatal(err);
        console.log(`Unexpected Top Level Error: ${err.toString()}`);
        this.errorCallbacks.uncaughtException(err);
      });
    });
  }

  _post(pathname, body, headers, then) {
    this.client.request('POST', pathname, Buffer.from(body, 'utf8'), headers).then((res) => {
      if (res.status !== 202) {
        process.stderr.write(`nimbus runtime: POST ${pathname} returned ${res.status}: ${res.body.toString('utf8', 0, 1024)}\n`);
      }
      if (then) then();
    }, fatal);
  }

  postResponse(id, result, then) {
    let body;
    try {
      body = JSON.stringify(result === undefined ? null : result);
    } catch (_) {
      this.postError(id, new Error('Unable to stringify response body'), then);
      return;
    }
    this._post(`${RUNTIME}/invocation/${encodeURIComponent(id)}/response`, body === undefined ? 'null' : body,
      { 'Content-Type': 'application/json' }, then);
  }

  postError(id, error, then) {
    const response = toRapidResponse(error);
    this._post(`${RUNTIME}/invocation/${encodeURIComponent(id)}/error`, JSON.stringify(response), {
      'Content-Type': 'application/json',
      'Lambda-Runtime-Function-Error-Type': headerValue(response.errorType),
    }, then);
  }

  /** callback, context.succeed/fail/done and their "only the first call counts" rules. */
  buildCallbackContext(id) {
    const scheduleNext = () => this.scheduleIteration();
    const postError = (err, then) => {
      logError('Invoke Error', err);
      this.postError(id, err, then);
    };
    let isCompleteInvoked = false;
    const complete = (result, then) => {
      if (isCompleteInvoked) {
        console.error('Invocation has already been reported as done. Cannot call complete more than once per invocation.');
        return;
      }
      isCompleteInvoked = true;
      this.postResponse(id, result, then);
    };
    let waitForEmptyEventLoop = true;
    const callback = (err, result) => {
      resetBeforeExit();
      if (err !== undefined && err !== null) {
        postError(err, scheduleNext);
      } else if (!waitForEmptyEventLoop) {
        complete(result, scheduleNext);
      } else {
        setBeforeExit(() => setImmediate(() => complete(result, scheduleNext)));
      }
    };
    const done = (err, result) => {
      resetBeforeExit();
      if (err !== undefined && err !== null) postError(err, scheduleNext);
      else complete(result, scheduleNext);
    };
    let finished = false;
    const once = (fn) => function () {
      if (!finished) {
        fn.apply(null, arguments);
        finished = true;
      }
    };
    const context = {
      get callbackWaitsForEmptyEventLoop() {
        return waitForEmptyEventLoop;
      },
      set callbackWaitsForEmptyEventLoop(value) {
        waitForEmptyEventLoop = value;
      },
      succeed: once((result) => done(null, result)),
      fail: once((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
      done: once(done),
    };
    return [once(callback), context, () => (isCompleteInvoked = true)];
  }

  async handleOnce() {
    const res = await this.client.request('GET', `${RUNTIME}/invocation/next`);
    if (res.status !== 200) {
      throw new RuntimeAPIError(`GET /invocation/next returned ${res.status}: ${res.body.toString('utf8', 0, 1024)}`);
    }
    const headers = res.headers;
    const id = headers['lambda-runtime-aws-request-id'];
    global[REQUEST_ID] = id;
    global[TENANT_ID] = headers['lambda-runtime-aws-tenant-id'];
    const [callback, context, markCompleted] = this.buildCallbackContext(id);
    try {
      this.errorCallbacks.uncaughtException = (error) => this.postError(id, error, () => process.exit(129));
      this.errorCallbacks.unhandledRejection = (error) => this.postError(id, error, () => process.exit(128));
      setBeforeExit(() => {
        // The event loop emptied before the function reported a result.
        markCompleted();
        if (this.isAsync) {
          const error = new NodeJsExit();
          logError('Invoke Error', error);
          this.postError(id, error, () => this.scheduleIteration());
        } else {
          this.postResponse(id, null, () => this.scheduleIteration());
        }
      });
      const event = JSON.parse(res.body.toString('utf8'));
      if (headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
      else delete process.env._X_AMZN_TRACE_ID;
      const deadline = Number(headers['lambda-runtime-deadline-ms']);
      Object.assign(context, {
        functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
        functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
        memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
        logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
        logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
        clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
        identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
        invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
        awsRequestId: id,
        tenantId: headers['lambda-runtime-aws-tenant-id'],
        getRemainingTimeInMillis: () => deadline - Date.now(),
      });
      const result = this.handler(event, context, callback);
      if (result && typeof result.then === 'function') {
        result.then(context.succeed, context.fail).catch(context.fail);
      }
    } catch (err) {
      callback(err);
    }
  }
}

/**
 * A sandbox nimbus prepared ahead of demand starts this runtime before it
 * knows its function: the function's environment arrives as one line of
 * JSON on the descriptor NIMBUS_ASSIGN_FD names, once it is assigned (and
 * its code is in place). Read synchronously: nothing else can happen first.
 */
function awaitAssignment() {
  const fd = process.env.NIMBUS_ASSIGN_FD;
  if (fd === undefined) return true;
  delete process.env.NIMBUS_ASSIGN_FD;
  const chunks = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    let n;
    try {
      n = fs.readSync(Number(fd), buf, 0, buf.length, null);
    } catch (e) {
      if (e.code === 'EAGAIN') continue;
      throw e;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  fs.closeSync(Number(fd));
  const line = Buffer.concat(chunks).toString('utf8').trim();
  if (!line) return false;
  Object.assign(process.env, JSON.parse(line));
  return true;
}

async function main() {
  if (!awaitAssignment()) {
    process.stderr.write('nimbus runtime: the sandbox was never assigned a function\n');
    process.exit(1);
  }
  patchConsole();
  const address = process.env.AWS_LAMBDA_RUNTIME_API;
  if (!address) fatal(new Error('AWS_LAMBDA_RUNTIME_API is not set'));
  const client = new RuntimeClient(address);

  const postInitError = (error, code) => {
    const response = toRapidResponse(error);
    client.request('POST', `${RUNTIME}/init/error`, Buffer.from(JSON.stringify(response), 'utf8'), {
      'Content-Type': 'application/json',
      'Lambda-Runtime-Function-Error-Type': headerValue(response.errorType),
    }).then(() => process.exit(code), () => process.exit(code));
  };
  const errorCallbacks = {
    uncaughtException: (error) => postInitError(error, 129),
    unhandledRejection: (error) => postInitError(error, 128),
  };
  process.on('uncaughtException', (error) => {
    logError('Uncaught Exception', error);
    errorCallbacks.uncaughtException(error);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const error = new UnhandledPromiseRejection(reason, promise);
    logError('Unhandled Promise Rejection', error);
    errorCallbacks.unhandledRejection(error);
  });
  resetBeforeExit();
  process.on('beforeExit', () => global[BEFORE_EXIT]());

  const appRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
  let handler;
  try {
    handler = await loadHandler(appRoot, process.env._HANDLER || '');
  } catch (error) {
    logError('Uncaught Exception', error);
    postInitError(error, 129);
    return;
  }
  new Runtime(client, handler, errorCallbacks).scheduleIteration();
}

main();
