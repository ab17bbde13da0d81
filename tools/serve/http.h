/* Between the HTTP layer (http.c) and the endpoints (endpoints.c, completions.c): answering a
 * connection with a body, an error, or a stream. */
#ifndef MAMBA_SERVE_HTTP_H
#define MAMBA_SERVE_HTTP_H

#include <stddef.h>

#include <microhttpd.h>

#include "server.h"

/* Queue body (malloc'd, taken over; NULL answers 500 out of memory) with status. */
enum MHD_Result serve_reply(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep, int status,
                            const char *content_type, char *body);
enum MHD_Result serve_reply_error(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep, const serve_error *e);
/* 1 when the client has closed its end of the connection. */
int serve_client_gone(struct MHD_Connection *c);

/* The endpoints: body is the whole request body. */
enum MHD_Result serve_health(struct MHD_Connection *c, serve_server *srv);
enum MHD_Result serve_metrics_endpoint(struct MHD_Connection *c, serve_server *srv);
enum MHD_Result serve_models(struct MHD_Connection *c, serve_server *srv);
enum MHD_Result serve_tokenize(struct MHD_Connection *c, serve_server *srv, const char *body, size_t len);
enum MHD_Result serve_detokenize(struct MHD_Connection *c, serve_server *srv, const char *body, size_t len);
enum MHD_Result serve_completions(struct MHD_Connection *c, serve_server *srv, serve_kind kind, const char *body,
                                  size_t len);

#endif
