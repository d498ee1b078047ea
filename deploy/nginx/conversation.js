// The conversation a request belongs to: nginx.conf hashes on it (`hash $conversation_key`), so
// every message of one conversation goes to the same `rasa run` worker while that worker is up.
//
//   1. an `X-Conversation-Id` header, when the client sends one (any channel);
//   2. the conversation id in the path of Rasa's HTTP API: /conversations/<id>/...;
//   3. the `sender` of a JSON body posted to a channel webhook (/webhooks/<channel>/webhook: the REST
//      channel, and every channel that names its sender the same way);
//   4. socket.io: the client's address (its polling requests must reach the worker that holds the
//      engine.io session, and the session id is not in the HTTP request);
//   5. anything else (/model/parse, /status, a body without a sender): the request's own id, which spreads
//      those requests over the workers.
//
// The three kinds of keys have different prefixes, so a sender id that looks like an address is still a
// conversation. A body nginx had to write to a file (over client_body_buffer_size) or that is not JSON is
// served as a request of no conversation.

var CONVERSATION_PATH = /^\/conversations\/([^\/]+)(\/|$)/;

function senderOf(r) {
    var body;
    try {
        body = r.requestText;
    } catch (e) {
        return null;
    }
    if (!body) {
        return null;
    }
    var parsed;
    try {
        parsed = JSON.parse(body);
    } catch (e) {
        return null;
    }
    if (parsed === null || typeof parsed !== 'object') {
        return null;
    }
    var sender = parsed.sender;
    if (typeof sender === 'string' && sender.length > 0) {
        return sender;
    }
    if (typeof sender === 'number') {
        return String(sender);
    }
    return null;
}

function key(r) {
    var header = r.headersIn['X-Conversation-Id'];
    if (header) {
        return 'conversation:' + header;
    }
    var uri = r.uri;
    if (uri.indexOf('/socket.io/') === 0) {
        return 'address:' + r.remoteAddress;
    }
    var match = CONVERSATION_PATH.exec(uri);
    if (match) {
        return 'conversation:' + match[1];
    }
    if (r.method === 'POST' && uri.indexOf('/webhooks/') === 0) {
        var sender = senderOf(r);
        if (sender !== null) {
            return 'conversation:' + sender;
        }
    }
    return 'request:' + r.variables.request_id;
}

export default { key: key };
