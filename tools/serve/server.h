/* What the HTTP threads share: the served model's description, the tokenizer (read-only, any
 * number of threads), the chat format, the limits, the scheduler and the metrics. */
#ifndef MAMBA_SERVE_SERVER_H
#define MAMBA_SERVE_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "chat_format.h"
#include "metrics.h"
#include "request.h"
#include "scheduler.h"
#include "mamba.h"

#define SERVE_MAX_BODY (1u << 20)

typedef struct serve_server {
    const char *model_name;
    size_t model_vocab;
    const mamba_tokenizer_t *tok;  /* NULL: prompts are token ids, outputs token ids        */
    chat_format chat;
    const char *api_key;           /* NULL: no authentication                                */
    serve_limits limits;
    size_t slots;
    long long started;             /* Unix seconds                                           */
    serve_scheduler *sched;
    serve_metrics *metrics;
    struct MHD_Daemon *daemon;
    int listen_fd;
    int open_requests;             /* requests being read or answered (atomic)               */
} serve_server;

/* Serve HTTP on the listening socket fd (each connection on a thread of its own). 0 with the
 * message in err. */
int serve_http_start(serve_server *srv, int fd, char *err, size_t err_len);
/* Stop accepting connections (the listening socket is closed). */
void serve_http_quiesce(serve_server *srv);
/* Wait up to timeout_s for the requests being answered to be sent (streams that have ended
 * but whose client has not read all of it yet). */
void serve_http_drain(serve_server *srv, double timeout_s);
/* Close every connection and join their threads. */
void serve_http_stop(serve_server *srv);

#endif
