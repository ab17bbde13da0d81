/* The HTTP layer on libmicrohttpd, a thread per connection (handlers may wait for the
 * decoding loop): routes, the API key, the body (up to SERVE_MAX_BODY), replies and their
 * counts. */
#include "http.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "response.h"

/* The most bytes of a body over the limit that are read (and dropped) before the 413. */
#define SERVE_MAX_DRAIN (16u << 20)

typedef struct route {
    const char *path, *method;
    serve_endpoint ep;
} route;

static const route routes[] = {
    {"/v1/completions", "POST", SERVE_EP_COMPLETIONS},
    {"/v1/chat/completions", "POST", SERVE_EP_CHAT},
    {"/v1/models", "GET", SERVE_EP_MODELS},
    {"/tokenize", "POST", SERVE_EP_TOKENIZE},
    {"/detokenize", "POST", SERVE_EP_DETOKENIZE},
    {"/health", "GET", SERVE_EP_HEALTH},
    {"/metrics", "GET", SERVE_EP_METRICS},
};

/* One request on a connection, across the handler's calls. */
typedef struct pending {
    const route *route;     /* NULL: unknown path                                          */
    int method_ok;
    int too_large;
    int answered;           /* the 413 went out before the body                           */
    serve_buf body;
} pending;

enum MHD_Result serve_reply(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep, int status,
                            const char *content_type, char *body)
{
    static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
    if (!body) status = 500;
    struct MHD_Response *r = body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
                                  : MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, body ? content_type : "application/json");
    if (status == 405) {
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
            if (routes[i].ep == ep) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, routes[i].method);
    }
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    const enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    serve_metrics_request(srv->metrics, ep, status);
    return rc;
}

enum MHD_Result serve_reply_error(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep, const serve_error *e)
{
    return serve_reply(c, srv, ep, e->status, "application/json", serve_json_error(e));
}

int serve_client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* Compared in time independent of where they differ. */
static int same_secret(const char *a, const char *b)
{
    const size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < na; i++) d |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return d == 0;
}

static int authorized(struct MHD_Connection *c, const serve_server *srv)
{
    if (!srv->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    return same_secret(h, srv->api_key);
}

static enum MHD_Result fail(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep, int status, const char *type,
                            const char *code, const char *msg)
{
    serve_error e;
    serve_fail(&e, status, type, NULL, code, "%s", msg);
    return serve_reply_error(c, srv, ep, &e);
}

static enum MHD_Result too_large(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep)
{
    serve_error e;
    serve_fail(&e, 413, "invalid_request_error", NULL, "request_too_large", "the request body is over %u bytes",
               SERVE_MAX_BODY);
    return serve_reply_error(c, srv, ep, &e);
}

static enum MHD_Result dispatch(struct MHD_Connection *c, serve_server *srv, pending *p)
{
    const serve_endpoint ep = p->route ? p->route->ep : SERVE_EP_OTHER;
    if (!p->route) return fail(c, srv, ep, 404, "invalid_request_error", "not_found", "no such endpoint");
    if (!p->method_ok) return fail(c, srv, ep, 405, "invalid_request_error", "method_not_allowed", "method not allowed here");
    if (ep != SERVE_EP_HEALTH && !authorized(c, srv))
        return fail(c, srv, ep, 401, "authentication_error", "invalid_api_key",
                    "a valid API key is required: send the header 'Authorization: Bearer KEY'");
    if (p->too_large) return too_large(c, srv, ep);
    const char *body = p->body.data ? p->body.data : "";
    switch (ep) {
    case SERVE_EP_COMPLETIONS: return serve_completions(c, srv, SERVE_COMPLETION, body, p->body.len);
    case SERVE_EP_CHAT: return serve_completions(c, srv, SERVE_CHAT, body, p->body.len);
    case SERVE_EP_MODELS: return serve_models(c, srv);
    case SERVE_EP_TOKENIZE: return serve_tokenize(c, srv, body, p->body.len);
    case SERVE_EP_DETOKENIZE: return serve_detokenize(c, srv, body, p->body.len);
    case SERVE_EP_HEALTH: return serve_health(c, srv);
    default: return serve_metrics_endpoint(c, srv);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)version;
    serve_server *srv = cls;
    pending *p = *state;
    if (!p) {
        if (!(p = calloc(1, sizeof *p))) return MHD_NO;
        *state = p;
        __atomic_add_fetch(&srv->open_requests, 1, __ATOMIC_SEQ_CST);
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
            if (strcmp(url, routes[i].path) == 0) {
                p->route = &routes[i];
                p->method_ok = strcmp(method, routes[i].method) == 0;
            }
        /* A declared length over the limit is answered before the body when the client waits
         * for a go-ahead (Expect: 100-continue) or the body is huge; otherwise the body is
         * read and dropped first, since a connection closed on unread data is reset and the
         * client may lose the answer. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        const unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
        if (declared > SERVE_MAX_BODY) {
            p->too_large = 1;
            if (expect || declared > SERVE_MAX_DRAIN) {
                p->answered = 1;
                return too_large(c, srv, p->route ? p->route->ep : SERVE_EP_OTHER);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!p->too_large && p->body.len + *upload_size > SERVE_MAX_BODY) {
            p->too_large = 1;
            serve_buf_free(&p->body);
        }
        if (!p->too_large && !serve_buf_add(&p->body, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    return p->answered ? MHD_YES : dispatch(c, srv, p);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode code)
{
    (void)c;
    (void)code;
    serve_server *srv = cls;
    pending *p = *state;
    if (!p) return;
    __atomic_sub_fetch(&srv->open_requests, 1, __ATOMIC_SEQ_CST);
    serve_buf_free(&p->body);
    free(p);
    *state = NULL;
}

int serve_http_start(serve_server *srv, int fd, char *err, size_t err_len)
{
    srv->listen_fd = fd;
    srv->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                                       MHD_USE_ITC,
                                   0, NULL, NULL, on_request, srv, MHD_OPTION_LISTEN_SOCKET, fd,
                                   MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT,
                                   (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)512, MHD_OPTION_END);
    if (!srv->daemon) {
        snprintf(err, err_len, "libmicrohttpd could not start on the listening socket (%s)", strerror(errno));
        return 0;
    }
    return 1;
}

void serve_http_quiesce(serve_server *srv)
{
    if (!srv->daemon) return;
    const MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    srv->listen_fd = -1;
}

void serve_http_drain(serve_server *srv, double timeout_s)
{
    for (int i = 0; i < (int)(timeout_s * 100) && __atomic_load_n(&srv->open_requests, __ATOMIC_SEQ_CST) > 0; i++)
        usleep(10000);
}

void serve_http_stop(serve_server *srv)
{
    if (srv->daemon) MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    if (srv->listen_fd >= 0) close(srv->listen_fd);
    srv->listen_fd = -1;
}
