"""The JSON-RPC protocol, hardened: a reply for every request, a token for TCP, one log line per client mistake.

pygls drops a message that is not JSON (here: -32700), one that is not a JSON-RPC object (-32600) and a request
whose params do not structure (-32602); here each gets its reply. A TCP client can be required to send a shared
token in its first message (see SECURITY.md). Client mistakes are logged once, in one line, not again in pygls'
tracebacks (:class:`ClientMistakeFilter`). With :mod:`dgls.transport`, the only code that reaches into pygls'
internals.
"""

from __future__ import annotations

import hmac
import json
import logging
from functools import partial
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger(__name__)


class RequestFailed(JsonRpcException):
    """LSP ``RequestFailed``: the request was well formed but cannot be served (model not ready, bad range)."""

    CODE = -32803


# --- protocol: a reply for every request --------------------------------------------------------------


class DglsProtocol(LanguageServerProtocol):
    """pygls' protocol, but every request gets a reply, and a TCP client can be asked for a token.

    pygls never answers a request whose params do not structure (here: -32602), and drops JSON that is not a
    JSON-RPC 2.0 message (here: -32600, with a null id when the id is unusable).
    """

    required_token: str | None = None  # TCP with a token: the first message must be `initialize` carrying it
    authenticated = False
    refused = False  # this connection was refused: drop whatever else it sent

    def structure_message(self, data: dict[str, Any]):
        """Structure one incoming JSON object; answer InvalidParams for a request that does not structure."""
        if "jsonrpc" in data and "method" in data:
            msg_id = data.get("id")
            if isinstance(msg_id, bool) or not isinstance(msg_id, (str, int, float, type(None))):
                self.reply_error(
                    None, -32600, f"Invalid Request: id must be a string or a number, got {type(msg_id).__name__}"
                )
                return self._ignored()
            if not isinstance(data["method"], str):
                if "id" in data:
                    self.reply_error(
                        msg_id, -32600, f"Invalid Request: method must be a string, got {type(data['method']).__name__}"
                    )
                return self._ignored()
            if "params" not in data:  # JSON-RPC lets params be left out; pygls' message types require the field
                data = {**data, "params": None}
        try:
            return super().structure_message(data)
        except (JsonRpcInvalidParams, JsonRpcInternalError) as exc:
            cause = exc.__cause__
            detail = _structure_problem(cause) if cause is not None else str(exc)
            method = data.get("method")
            if "id" not in data or "method" not in data:
                log.warning(
                    "invalid params in %s: %s (not a request: nothing to answer)", method or "a response", detail
                )
                raise
            log.warning("invalid params for %s (id %r): %s", method, data.get("id"), detail)
            self._send_response(
                data["id"],
                None,
                JsonRpcInvalidParams(f"invalid params for {method}: {detail}").to_response_error(),
            )
            return self._ignored()

    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None):
        """The handler dispatch of pygls, minus two of its flaws with the handlers it runs on a client's behalf.

        pygls 2.1 files the future of every coroutine, generator or threaded handler under its message id and only
        removes it when it answers a request. A notification (didOpen/didChange/didClose) and the user handler a
        builtin generator yields to (``workspace/executeCommand`` -> a command, didClose, initialize, shutdown ...)
        get a fresh uuid that nothing ever removes: each keystroke kept about 1 KiB (a Future, its Condition and
        lock), and each command its finished task for the life of the server, with the traceback and frames of
        the error it raised. Here those futures are forgotten once done.

        And ``$/cancelRequest`` for a request answered by a generator (``workspace/executeCommand``) cancels the
        generator's future but not the handler it yielded to: a cancelled rewrite ran on and applied its edit.
        Here the yielded handler is cancelled with its request.
        """
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        if isinstance(callback, partial) and callback.func == self._send_handler_result:
            return  # a client's request, under the client's id: pygls pops it when it replies
        future = self._request_futures.get(msg_id)
        if future is None:
            return
        future.add_done_callback(lambda _f: self._request_futures.pop(msg_id, None))  # runs now if done
        outer = callback.keywords.get("result_future") if isinstance(callback, partial) else None
        if outer is not None:  # the handler a generator yielded to: it goes when the generator's request goes
            outer.add_done_callback(lambda f: future.cancel() if f.cancelled() else None)

    def _ignored(self) -> Any:
        """A message already answered here: hand pygls a notification nobody listens to ($/ may be ignored)."""
        return self._converter.structure(
            {"jsonrpc": "2.0", "method": "$/dgls/answered", "params": None}, _ignored_notification_type()
        )

    def reply_error(self, msg_id: float | str | None, code: int, message: str) -> None:
        """Send a JSON-RPC error response; a null id is written out (pygls would drop the field)."""
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def handle_message(self, message: Any) -> None:
        """Dispatch one message; answer -32600 for JSON that is not a JSON-RPC message; check the TCP token."""
        if not hasattr(message, "jsonrpc") or message.jsonrpc != self.VERSION:  # `42`, `[]`, {"id": 1}, ...
            msg_id = message.get("id") if isinstance(message, dict) else getattr(message, "id", None)
            log.warning("not a JSON-RPC 2.0 message: %.200r", message)
            self.reply_error(
                msg_id if isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool) else None,
                -32600,
                'Invalid Request: expected a JSON-RPC 2.0 object {"jsonrpc": "2.0", "method": ..., "id": ...}',
            )
            return
        if self.required_token is not None and not self.authenticated:
            if self.refused:
                return
            if not _carries_token(message, self.required_token):
                self.refused = True
                log.warning(
                    "refused a TCP client: its first message was not an initialize request carrying the "
                    "right token (initializationOptions.token)"
                )
                if getattr(message, "id", None) is not None and getattr(message, "method", None):
                    self._send_response(
                        message.id,
                        None,
                        RequestFailed(
                            "dgls: this server requires a token: send it as initializationOptions.token in initialize"
                        ).to_response_error(),
                    )
                if self.writer is not None:
                    self.writer.close()  # the read loop sees end of stream and this connection ends
                return
            self.authenticated = True
        super().handle_message(message)


def _carries_token(message: Any, token: str) -> bool:
    """Whether `message` is an initialize request carrying `token` in its initializationOptions.

    The token is looked for at the top level and under "dgls", and compared in constant time.
    """
    if getattr(message, "method", None) != types.INITIALIZE or getattr(message, "id", None) is None:
        return False
    options = getattr(message.params, "initialization_options", None)
    if not isinstance(options, dict):
        return False
    given = options.get("token")
    if given is None and isinstance(options.get("dgls"), dict):
        given = options["dgls"].get("token")
    return isinstance(given, str) and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


def _ignored_notification_type():
    from pygls.protocol.json_rpc import JsonRPCNotification

    return JsonRPCNotification


def _structure_problem(exc: BaseException) -> str:
    """One line out of a cattrs structuring error: which field, what was expected."""
    try:
        from cattrs import transform_error

        return "; ".join(transform_error(exc, path="$"))
    except Exception:  # not a cattrs error: its own message
        return f"{type(exc).__name__}: {exc}"


def command_args(ls: LanguageServer, command: str, args: tuple, spec: list[tuple[str, type]]) -> list[Any]:
    """Structure a command's JSON arguments by `spec` ((name, type) pairs); InvalidParams saying what is wrong."""
    names = ", ".join(name for name, _ in spec)
    if len(args) != len(spec):
        raise JsonRpcInvalidParams(f"{command} expects arguments [{names}], got {len(args)} argument(s)")
    out = []
    for (name, kind), value in zip(spec, args, strict=True):
        try:
            if kind in (str, dict) and not isinstance(value, kind):
                raise TypeError(f"expected {'a string' if kind is str else 'an object'}, got {type(value).__name__}")
            out.append(value if kind in (str, dict) else ls.protocol._converter.structure(value, kind))
        except Exception as exc:
            detail = _structure_problem(exc)
            raise JsonRpcInvalidParams(f"{command}: argument {name!r} is invalid: {detail}") from None
    return out


# --- logging: client mistakes in one line -------------------------------------------------------------------

UNPARSABLE = (json.JSONDecodeError, UnicodeDecodeError, RecursionError)  # a message body json.loads fails on


def client_mistake(error: BaseException | None) -> bool:
    """A message the client got wrong (answered with an error where one is due), not a fault of the server."""
    return isinstance(error, UNPARSABLE) or (
        isinstance(error, JsonRpcException) and not isinstance(error, JsonRpcInternalError)
    )


class ClientMistakeFilter(logging.Filter):
    """Client mistakes in one line, not in a 60-line traceback; server faults keep theirs.

    dgls logs every malformed message once, in one line (``structure_message`` and ``report_server_error``),
    and answers it where a reply is due. pygls logs the same events again with a traceback (a cattrs exception
    group for bad params, a JSON decoder stack for a bad body, a handler stack for an InvalidParams a handler
    raised), and warns about the ``$/dgls/answered`` placeholder it is handed: those records are dropped. A
    cancel for a request that has just been answered is routine: debug.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop or demote pygls' records of client mistakes; keep the rest."""
        msg = str(record.msg)
        if msg.startswith("Unable to deserialize message") or "$/dgls/answered" in record.getMessage():
            return False
        if record.exc_info and client_mistake(record.exc_info[1]):
            return False
        if msg.startswith("Cancel notification for unknown message id"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True
