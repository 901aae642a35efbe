"""nimbus runtime for Python Lambda functions (stdlib only, Python 3.8+).

The nimbus server starts this as `python3 -u bootstrap.py` with the working
directory set to $LAMBDA_TASK_ROOT.  It imports the module named by $_HANDLER
once, then loops over the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API
(`GET /invocation/next`, `POST /invocation/{id}/response|error`,
`POST /init/error`), reproducing what AWS's Python runtime (awslambdaric) does:
the context object, JSON marshalling, error bodies, error types and messages,
the `[ERROR] ...` log record and a root logging handler in Lambda's format.

It is hand-written instead of using awslambdaric because that client is slow
to start (http.client + ssl, logging, simplejson, a C++ extension).  Cold start
matters, so this file imports nothing at start-up beyond what the interpreter
has already loaded, plus the C modules _socket (raw HTTP/1.1 client) and _json
(JSON without the `re` import that the json package costs).  traceback, json
and the logging set-up are imported lazily, only when needed.
"""

import os
import sys
import time

_environ = os.environ
_RUNTIME = '/2018-06-01/runtime'
_REQUEST_ID = None  # current invocation, for the logging filter
_TENANT_ID = None


# --------------------------------------------------------------------------
# Runtime API client: HTTP/1.1 over one keep-alive TCP connection.
# --------------------------------------------------------------------------

class RuntimeAPIError(Exception):
    """The Runtime API cannot be reached or broke the protocol (fatal)."""


class _Closed(Exception):
    def __init__(self, partial):
        Exception.__init__(self, 'connection closed by the Runtime API')
        self.partial = partial  # some response bytes had already arrived


class _Connection(object):
    def __init__(self, address):
        self.address = address
        host, sep, port = address.rpartition(':')
        if not sep or not port.isdigit():
            host, port = address, '80'
        self.host = host.strip('[]') or '127.0.0.1'
        self.port = int(port)
        self.sock = None
        self.buf = b''

    def close(self):
        sock, self.sock, self.buf = self.sock, None, b''
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _connect(self):
        import _socket
        error = None
        # A str host would make getaddrinfo load the idna codec (and `re`).
        for family, kind, proto, _, addr in _socket.getaddrinfo(
                self.host.encode('idna' if not self.host.isascii() else 'ascii'),
                self.port, 0, _socket.SOCK_STREAM):
            sock = _socket.socket(family, kind, proto)
            try:
                sock.connect(addr)
            except OSError as e:
                sock.close()
                error = e
                continue
            try:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.sock = sock
            return
        raise error or OSError('cannot resolve ' + self.host)

    def request(self, method, path, body=None, headers=''):
        """Send a request; return (status, headers with lower-case names, body)."""
        head = '%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: nimbus-python/%d.%d\r\n%s' % (
            method, path, self.address, sys.version_info[0], sys.version_info[1], headers)
        if body is not None:
            head += 'Content-Length: %d\r\n' % len(body)
        data = (head + '\r\n').encode('latin-1')
        if body:
            data += body
        for attempt in (0, 1):
            reused = self.sock is not None
            try:
                if not reused:
                    self._connect()
                try:
                    self.sock.sendall(data)
                except OSError:
                    raise _Closed(False)
                return self._response(method)
            except _Closed as e:
                self.close()
                # A kept-alive connection the server closed while idle: retry once.
                if reused and not e.partial and attempt == 0:
                    continue
                raise RuntimeAPIError('%s %s: connection to the Runtime API at %s was closed'
                                      % (method, path, self.address))
            except (OSError, ValueError) as e:
                self.close()
                raise RuntimeAPIError('%s %s: Runtime API at %s: %s'
                                      % (method, path, self.address, e))

    def _recv(self, partial=True):
        try:
            chunk = self.sock.recv(262144)
        except OSError:
            raise _Closed(partial)
        if not chunk:
            raise _Closed(partial)
        return chunk

    def _exact(self, buf, n):
        """Return (the first n bytes, the rest), reading more as needed."""
        if len(buf) >= n:
            return buf[:n], buf[n:]
        parts = [buf]
        have = len(buf)
        while have < n:
            chunk = self._recv()
            parts.append(chunk)
            have += len(chunk)
        buf = b''.join(parts)
        return buf[:n], buf[n:]

    def _line(self, buf):
        while True:
            i = buf.find(b'\r\n')
            if i >= 0:
                return buf[:i], buf[i + 2:]
            buf += self._recv()

    def _response(self, method):
        buf = self.buf
        while True:
            while True:
                end = buf.find(b'\r\n\r\n')
                if end >= 0:
                    break
                buf += self._recv(bool(buf))
            lines = buf[:end].decode('latin-1').split('\r\n')
            buf = buf[end + 4:]
            version, status = lines[0].split(None, 2)[:2]
            status = int(status)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(':')
                name = name.strip().lower()
                if name in headers:
                    headers[name] += ', ' + value.strip()
                else:
                    headers[name] = value.strip()
            if status >= 200:
                break  # else an interim 1xx response: read the next one
        connection = headers.get('connection', '').lower()
        close = 'close' in connection or (version == 'HTTP/1.0' and 'keep-alive' not in connection)
        if 'chunked' in headers.get('transfer-encoding', '').lower():
            parts = []
            while True:
                line, buf = self._line(buf)
                size = int(line.split(b';', 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, up to an empty line
                        line, buf = self._line(buf)
                        if not line:
                            break
                    break
                chunk, buf = self._exact(buf, size + 2)
                parts.append(chunk[:size])
            body = b''.join(parts)
        elif 'content-length' in headers:
            body, buf = self._exact(buf, int(headers['content-length']))
        elif method == 'HEAD' or status in (204, 304):
            body = b''
        else:  # delimited by the end of the connection
            parts = [buf]
            while True:
                try:
                    parts.append(self._recv())
                except _Closed:
                    break
            body, buf, close = b''.join(parts), b'', True
        if close:
            self.close()
        else:
            self.buf = buf
        return status, headers, body


# --------------------------------------------------------------------------
# JSON: the json package imports `re` (several ms); _json alone does not.
# --------------------------------------------------------------------------

_JSON_WS = ' \t\n\r'


def _build_loads():
    try:
        from _json import make_scanner

        class Context(object):
            pass
        ctx = Context()
        ctx.strict = True
        ctx.object_hook = None
        ctx.object_pairs_hook = None
        ctx.parse_float = float
        ctx.parse_int = int
        ctx.parse_constant = {'NaN': float('nan'), 'Infinity': float('inf'),
                              '-Infinity': float('-inf')}.__getitem__
        ctx.memo = {}
        scan = make_scanner(ctx)
    except Exception:
        import json
        return json.loads

    def loads(data):
        try:
            text = data.decode('utf-8') if isinstance(data, (bytes, bytearray)) else data
            start = len(text) - len(text.lstrip(_JSON_WS))
            value, end = scan(text, start)
            if end == len(text) or not text[end:].strip(_JSON_WS):
                return value
        except Exception:
            pass
        import json  # not plain JSON after all: let json decide, with its messages
        return json.loads(data)
    return loads


def _default(obj):
    # awslambdaric (simplejson) writes Decimals (e.g. from DynamoDB) as numbers.
    if type(obj).__name__ == 'Decimal' and hasattr(obj, 'as_tuple'):
        if obj.is_nan():
            return float('nan')
        exponent = obj.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(obj)
        return float(obj)
    raise TypeError('Object of type %s is not JSON serializable' % obj.__class__.__name__)


def _build_dumps(ensure_ascii):
    try:
        from _json import make_encoder, encode_basestring_ascii, encode_basestring
        quote = encode_basestring_ascii if ensure_ascii else encode_basestring
        # Probe the signature once; a fresh encoder per call (its circular
        # reference markers are not cleaned up after an error).
        make_encoder({}, _default, quote, None, ': ', ', ', False, False, True)
    except Exception:
        import json
        return json.JSONEncoder(ensure_ascii=ensure_ascii, default=_default).encode

    def dumps(obj):
        return ''.join(make_encoder({}, _default, quote, None, ': ', ', ',
                                    False, False, True)(obj, 0))
    return dumps


def _ensure_ascii():
    # awslambdaric uses ensure_ascii=False from python3.12 on.
    env = _environ.get('AWS_EXECUTION_ENV', '')
    if env.startswith('AWS_Lambda_python3.'):
        minor = env[len('AWS_Lambda_python3.'):]
        if minor.isdigit() and int(minor) >= 12:
            return False
    return True


_loads = _build_loads()
_dumps = _build_dumps(_ensure_ascii())
_dumps_ascii = _dumps if _ensure_ascii() else _build_dumps(True)


def _to_json_bytes(obj):
    text = _dumps(obj)
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:  # lone surrogates: escape them instead
        return _dumps_ascii(obj).encode('ascii')


# --------------------------------------------------------------------------
# Errors and logs
# --------------------------------------------------------------------------

class FaultException(Exception):
    MARSHAL_ERROR = 'Runtime.MarshalError'
    UNMARSHAL_ERROR = 'Runtime.UnmarshalError'
    USER_CODE_SYNTAX_ERROR = 'Runtime.UserCodeSyntaxError'
    HANDLER_NOT_FOUND = 'Runtime.HandlerNotFound'
    IMPORT_MODULE_ERROR = 'Runtime.ImportModuleError'
    BUILT_IN_MODULE_CONFLICT = 'Runtime.BuiltInModuleConflict'
    MALFORMED_HANDLER_NAME = 'Runtime.MalformedHandlerName'
    LAMBDA_CONTEXT_UNMARSHAL_ERROR = 'Runtime.LambdaContextUnmarshalError'

    def __init__(self, exception_type, msg, trace=None):
        Exception.__init__(self, msg)
        self.msg = msg
        self.exception_type = exception_type
        self.trace = trace


def _make_error(message, error_type, stack_trace, request_id=None):
    return {
        'errorMessage': message if message else '',
        'errorType': error_type if error_type else '',
        'requestId': request_id if request_id is not None else '',
        'stackTrace': stack_trace if stack_trace else [],
    }


def _error_from_exception(exc_info, request_id=None):
    import traceback
    etype, value, tb = exc_info
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    # Drop this file's frames from the top, as awslambdaric drops bootstrap.py's.
    mine = _error_from_exception.__code__.co_filename
    for i in range(len(frames)):
        if frames[i][0] != mine:
            frames = frames[i:]
            break
    try:
        message = str(value)
    except Exception:
        message = '<unprintable %s object>' % etype.__name__
    return _make_error(message, etype.__name__, traceback.format_list(frames), request_id)


def _write_log(text):
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except Exception:
        try:
            sys.__stdout__.write(text)
            sys.__stdout__.flush()
        except Exception:
            pass


def _log_error(error):
    """Log an error as awslambdaric does: `[ERROR] Type: message`, then the trace."""
    description = '[ERROR]'
    if error['errorType']:
        description += ' ' + error['errorType']
    if error['errorMessage']:
        if error['errorType']:
            description += ':'
        description += ' ' + error['errorMessage']
    lines = [description, 'Traceback (most recent call last):']
    for element in error['stackTrace']:
        if element == '':
            lines.append('')
        else:
            lines.extend(element.splitlines())
    _write_log('\n'.join(lines) + '\n')


def _log_level():
    level = _environ.get('AWS_LAMBDA_LOG_LEVEL')
    return {None: '', 'TRACE': 'DEBUG'}.get(level, level).upper()


def _timestamp():
    now = time.time()
    return '%s.%03dZ' % (time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now)),
                         int(now % 1 * 1000))


_UNHANDLED_WARNING = (
    'LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function '
    'code. However, in rare cases, a Lambda runtime update can cause unexpected function '
    'behavior. For functions using managed runtimes, runtime updates can be triggered by a '
    'function change, or can be applied automatically. To determine if the runtime has been '
    'updated, check the runtime version in the INIT_START log entry. If this error correlates '
    'with a change in the runtime version, you may be able to mitigate this error by '
    'temporarily rolling back to the previous runtime version. For more information, see '
    'https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html')


# --------------------------------------------------------------------------
# Logging: Lambda gives the root logger a handler writing
# "[LEVEL]\t<time>Z\t<request id>\t<message>".  Importing logging is costly, so
# it is configured when (and if) the function's code first imports it.
# --------------------------------------------------------------------------

def _setup_logging(logging):
    logging.Formatter.converter = time.gmtime

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                msg = self.format(record)
            except Exception:
                self.handleError(record)
                return
            sys.stdout.write(msg)

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _REQUEST_ID or ''
            record.tenant_id = _TENANT_ID
            return True

    handler = LambdaLoggerHandler()
    handler.setFormatter(logging.Formatter(
        '[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n',
        '%Y-%m-%dT%H:%M:%S'))
    handler.addFilter(LambdaLoggerFilter())
    logger = logging.getLogger()
    level = _log_level()
    if level in getattr(logging, '_nameToLevel', ()):
        logger.setLevel(level)
    logger.addHandler(handler)


class _LoggingLoader(object):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader
        if getattr(module, '__spec__', None) is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        try:
            sys.meta_path.remove(_LoggingFinder)
        except ValueError:
            pass
        _setup_logging(module)


class _LoggingFinder(object):
    """Wraps the loader of `logging`; removed from sys.meta_path once it ran."""
    busy = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != 'logging' or cls.busy:
            return None
        cls.busy = True
        try:
            for finder in sys.meta_path:
                find = getattr(finder, 'find_spec', None)
                if finder is cls or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                        spec.loader = _LoggingLoader(spec.loader)
                    return spec
            return None
        finally:
            cls.busy = False


def _install_logging():
    if 'logging' in sys.modules:
        _setup_logging(sys.modules['logging'])
    else:
        sys.meta_path.insert(0, _LoggingFinder)


# --------------------------------------------------------------------------
# Context object (same attributes as awslambdaric's LambdaContext)
# --------------------------------------------------------------------------

def _obj_from_dict(cls, values):
    if values is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, values.get(field))
    return obj


def _slots_repr(obj):
    return '%s([%s])' % (obj.__class__.__name__, ','.join(
        '%s=%s' % (f, getattr(obj, f, None)) for f in obj.__class__.__slots__))


class CognitoIdentity(object):
    __slots__ = ['cognito_identity_id', 'cognito_identity_pool_id']
    __repr__ = _slots_repr


class Client(object):
    __slots__ = ['installation_id', 'app_title', 'app_version_name',
                 'app_version_code', 'app_package_name']
    __repr__ = _slots_repr


class ClientContext(object):
    __slots__ = ['custom', 'env', 'client']
    __repr__ = _slots_repr


class LambdaContext(object):
    def __init__(self, invoke_id, client_context, cognito_identity,
                 epoch_deadline_time_in_ms, invoked_function_arn=None, tenant_id=None):
        self.aws_request_id = invoke_id
        self.log_group_name = _environ.get('AWS_LAMBDA_LOG_GROUP_NAME')
        self.log_stream_name = _environ.get('AWS_LAMBDA_LOG_STREAM_NAME')
        self.function_name = _environ.get('AWS_LAMBDA_FUNCTION_NAME')
        # A string, exactly as in AWS's Python runtime.
        self.memory_limit_in_mb = _environ.get('AWS_LAMBDA_FUNCTION_MEMORY_SIZE')
        self.function_version = _environ.get('AWS_LAMBDA_FUNCTION_VERSION')
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get('cognitoIdentityId')
            self.identity.cognito_identity_pool_id = cognito_identity.get('cognitoIdentityPoolId')
        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self):
        delta = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta if delta > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return ('%s([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,function_name=%s,'
                'memory_limit_in_mb=%s,function_version=%s,invoked_function_arn=%s,'
                'client_context=%s,identity=%s,tenant_id=%s])' % (
                    self.__class__.__name__, self.aws_request_id, self.log_group_name,
                    self.log_stream_name, self.function_name, self.memory_limit_in_mb,
                    self.function_version, self.invoked_function_arn, self.client_context,
                    self.identity, self.tenant_id))


def _parse_json_header(value, name):
    try:
        return _loads(value)
    except Exception as e:
        raise FaultException(FaultException.LAMBDA_CONTEXT_UNMARSHAL_ERROR,
                             'Unable to parse {} JSON: {}'.format(name, e))


# --------------------------------------------------------------------------
# Handler loading and invocation
# --------------------------------------------------------------------------

def _load_handler(handler):
    try:
        modname, fname = handler.rsplit('.', 1)
    except ValueError as e:
        raise FaultException(FaultException.MALFORMED_HANDLER_NAME,
                             "Bad handler '{}': {}".format(handler, e))
    try:
        if modname.split('.')[0] in sys.builtin_module_names:
            raise FaultException(FaultException.BUILT_IN_MODULE_CONFLICT,
                                 'Cannot use built-in module {} as a handler module'.format(modname))
        name = modname.replace('/', '.')
        __import__(name)
        module = sys.modules[name]
    except ImportError as e:
        raise FaultException(FaultException.IMPORT_MODULE_ERROR,
                             "Unable to import module '{}': {}".format(modname, e))
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(FaultException.USER_CODE_SYNTAX_ERROR,
                             "Syntax error in module '{}': {}".format(modname, e), trace)
    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultException(FaultException.HANDLER_NOT_FOUND,
                             "Handler '{}' missing on module '{}'".format(fname, modname))


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def _header_value(value):
    value = str(value)
    if value.isascii() and value.isprintable():
        return value
    return ''.join(c if ' ' <= c <= '~' else '?' for c in value)


def _post_error(conn, path, error):
    _flush()
    status, _, body = conn.request(
        'POST', path, _to_json_bytes(error),
        'Content-Type: application/json\r\nLambda-Runtime-Function-Error-Type: %s\r\n'
        % _header_value(error['errorType']))
    if status != 202:
        _complain(path, status, body)


def _complain(path, status, body):
    try:
        sys.stderr.write('nimbus runtime: POST %s returned %d: %s\n'
                         % (path, status, body[:1024].decode('utf-8', 'replace')))
    except Exception:
        pass


def _invoke(conn, handler, headers, body):
    global _REQUEST_ID, _TENANT_ID
    request_id = headers.get('lambda-runtime-aws-request-id', '')
    _REQUEST_ID = request_id
    _TENANT_ID = headers.get('lambda-runtime-aws-tenant-id')
    trace_id = headers.get('lambda-runtime-trace-id')
    if trace_id:
        _environ['_X_AMZN_TRACE_ID'] = trace_id
    else:
        _environ.pop('_X_AMZN_TRACE_ID', None)

    error = None
    try:
        client_context = headers.get('lambda-runtime-client-context')
        cognito_identity = headers.get('lambda-runtime-cognito-identity')
        try:
            deadline = int(headers.get('lambda-runtime-deadline-ms') or 0)
        except ValueError:
            deadline = 0
        context = LambdaContext(
            request_id,
            _parse_json_header(client_context, 'Client Context') if client_context else None,
            _parse_json_header(cognito_identity, 'Cognito Identity') if cognito_identity else None,
            deadline,
            headers.get('lambda-runtime-invoked-function-arn'),
            _TENANT_ID)
        content_type = headers.get('content-type', 'application/json')
        if content_type.split(';', 1)[0].strip().lower() in ('application/json', ''):
            try:
                event = _loads(body)
            except Exception as e:
                raise FaultException(FaultException.UNMARSHAL_ERROR,
                                     'Unable to unmarshal input: {}'.format(e))
        else:
            event = body
        result = handler(event, context)
        if isinstance(result, bytes):
            payload, payload_type = result, 'application/unknown'
        else:
            try:
                payload, payload_type = _to_json_bytes(result), 'application/json'
            except Exception as e:
                raise FaultException(FaultException.MARSHAL_ERROR,
                                     'Unable to marshal response: {}'.format(e))
    except FaultException as e:
        error = _make_error(e.msg, e.exception_type, e.trace, request_id)
    except Exception:
        error = _error_from_exception(sys.exc_info(), request_id)

    path = '%s/invocation/%s/' % (_RUNTIME, request_id)
    if error is not None:
        _log_error(error)
        _post_error(conn, path + 'error', error)
    else:
        _flush()
        status, _, answer = conn.request('POST', path + 'response', payload,
                                         'Content-Type: %s\r\n' % payload_type)
        if status != 202:
            _complain(path + 'response', status, answer)


def _await_assignment():
    """A sandbox nimbus prepared ahead of demand starts this runtime before
    it knows its function: the function's environment arrives as one line
    of JSON on the descriptor NIMBUS_ASSIGN_FD names, once it is assigned
    (and its code is in place)."""
    fd = _environ.pop('NIMBUS_ASSIGN_FD', None)
    if fd is None:
        return True
    with os.fdopen(int(fd), 'rb') as f:
        line = f.readline()
    if not line:
        return False
    import json
    _environ.update(json.loads(line))
    return True


def main():
    if not _await_assignment():
        sys.stderr.write('nimbus runtime: the sandbox was never assigned a function\n')
        return 1
    address = _environ.get('AWS_LAMBDA_RUNTIME_API')
    if not address:
        sys.stderr.write('nimbus runtime: AWS_LAMBDA_RUNTIME_API is not set\n')
        return 1
    conn = _Connection(address)

    # The function's code comes first on sys.path, instead of this file's directory.
    task_root = _environ.get('LAMBDA_TASK_ROOT') or os.getcwd()
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] in (here, os.path.realpath(here), ''):
        sys.path[0] = task_root
    elif task_root not in sys.path:
        sys.path.insert(0, task_root)
    _install_logging()

    error = None
    try:
        handler = _load_handler(_environ.get('_HANDLER', ''))
    except FaultException as e:
        error = _make_error(e.msg, e.exception_type, e.trace)
    except Exception:
        error = _error_from_exception(sys.exc_info())
    try:
        if error is not None:
            if _log_level() in ('', 'DEBUG', 'INFO', 'WARNING'):
                _write_log('[WARNING]\t%s\t%s\t%s\n' % (_timestamp(), _REQUEST_ID or '',
                                                        _UNHANDLED_WARNING))
            _log_error(error)
            _post_error(conn, _RUNTIME + '/init/error', error)
            return 1
        while True:
            status, headers, body = conn.request('GET', _RUNTIME + '/invocation/next')
            if status != 200:
                raise RuntimeAPIError('GET /invocation/next returned %d: %s' % (
                    status, body[:1024].decode('utf-8', 'replace')))
            _invoke(conn, handler, headers, body)
    except RuntimeAPIError as e:
        _flush()
        sys.stderr.write('nimbus runtime: %s\n' % e)
        return 1


if __name__ == '__main__':
    sys.exit(main())
