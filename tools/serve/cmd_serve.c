/* mamba serve: the options, the model, tokenizer and chat format, the listening socket, and
 * the orderly shutdown on SIGINT/SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "server.h"

/* Seconds running requests get to finish after SIGINT/SIGTERM. */
#define SHUTDOWN_GRACE_S 5.0
/* Then seconds the answers already made get to reach their clients. */
#define DRAIN_S 2.0

static const char usage[] =
    "usage: mamba serve --model DIR|SIZE [--tokenizer FILE] [--backend B] [--host 127.0.0.1]\n"
    "                   [--port 8080] [--slots N] [--max-tokens N] [--api-key KEY] [--queue N]\n"
    "                   [--cache-mb N] [--chat-template NAME] [--name NAME] [--threads N]\n"
    "\n"
    "An OpenAI-compatible HTTP server with continuous batching: up to --slots requests are\n"
    "decoded together, each a sequence of one recurrent state; new prompts are prefilled in\n"
    "chunks between the steps of the others. Greedy requests get exactly the tokens they get\n"
    "alone.\n"
    "\n"
    "endpoints:\n"
    "  POST /v1/completions        prompt (text or token ids), max_tokens, temperature, top_p,\n"
    "                              top_k, min_p, seed, stop, stream, n = 1\n"
    "  POST /v1/chat/completions   messages (system, user, assistant) through the chat format\n"
    "  GET  /v1/models             the served model\n"
    "  POST /tokenize              {\"content\": text} -> {\"tokens\": [...]}\n"
    "  POST /detokenize            {\"tokens\": [...]} -> {\"content\": text}\n"
    "  GET  /health                {\"status\": \"ok\"}\n"
    "  GET  /metrics               Prometheus text: requests, tokens, tokens/s, slots, queue,\n"
    "                              prompt-cache hits and misses, the loop's time (model,\n"
    "                              sampling, emitting, sending)\n"
    "With stream: true the answer comes as server-sent events, one 'data: {...}' chunk per\n"
    "token or group of tokens, then 'data: [DONE]'. Extensions: return_tokens (the token ids in\n"
    "each choice), ignore_eos. Errors are OpenAI's {\"error\": {message, type, param, code}}.\n"
    "\n"
    "  --model DIR|SIZE      Hugging Face checkpoint directory (its tokenizer.json,\n"
    "                        tokenizer_config.json and config.json's eos_token_id are used), or\n"
    "                        130m|370m|790m|1.4b|2.8b for synthetic weights\n"
    "  --tokenizer FILE      tokenizer.json (or a directory holding it); without one, prompts\n"
    "                        must be token ids and answers carry no text\n"
    "  --backend B           cpu, opencl[:i], cuda[:i] or auto (default)\n"
    "  --host H              address to listen on (default 127.0.0.1)\n"
    "  --port P              port (default 8080; 0 picks a free one). 'listening on\n"
    "                        http://HOST:PORT' goes to stderr once the server accepts\n"
    "  --slots N             requests decoded at once (default 4)\n"
    "  --max-tokens N        the most tokens a request may generate, and its default (512)\n"
    "  --api-key KEY         require 'Authorization: Bearer KEY' (all but /health); also\n"
    "                        from $MAMBA_API_KEY\n"
    "  --queue N             requests that may wait for a slot (default 64); more get 503\n"
    "  --cache-mb N          prompt-state cache in MiB (default 256; 0: off): a prompt that\n"
    "                        extends an earlier one restores its state and prefills the rest;\n"
    "                        the states are kept in the backend's memory (the GPU's)\n"
    "  --chat-template NAME  chatml, zephyr or plain (default: recognized from the checkpoint's\n"
    "                        tokenizer_config.json chat_template, else plain)\n"
    "  --name NAME           the model name in answers (default: the --model argument's base)\n"
    "  --threads N           CPU threads: the CPU backend's and those drawing a step's tokens\n"
    "                        (default: all)\n"
    "  --dtype T             f32, f16 or bf16: the synthetic weights' dtype\n"
    "\n"
    "Requests are limited to 1 MiB bodies (413 past it). SIGINT or SIGTERM: stop accepting,\n"
    "let running requests finish for up to 5 s, end the rest (an error), give the answers up\n"
    "to 2 s more to reach their clients, exit 0.\n";

typedef struct options {
    const char *model, *tokenizer, *backend, *host, *api_key, *chat_template, *name;
    long port, slots, max_tokens, queue, cache_mb, threads;
    mamba_dtype_t dtype;
} options;

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'k'},
        {"backend", required_argument, 0, 'b'}, {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'}, {"slots", required_argument, 0, 's'},
        {"max-tokens", required_argument, 0, 'n'}, {"api-key", required_argument, 0, 'a'},
        {"queue", required_argument, 0, 'q'}, {"cache-mb", required_argument, 0, 'c'},
        {"chat-template", required_argument, 0, 'C'}, {"name", required_argument, 0, 'N'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->slots = 4;
    o->max_tokens = 512;
    o->queue = 64;
    o->cache_mb = 256;
    o->dtype = MAMBA_F32;
    o->api_key = getenv("MAMBA_API_KEY");
    if (o->api_key && !*o->api_key) o->api_key = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'k': o->tokenizer = optarg; break;
        case 'b': o->backend = optarg; break;
        case 'H': o->host = optarg; break;
        case 'a': o->api_key = *optarg ? optarg : NULL; break;
        case 'C': o->chat_template = optarg; break;
        case 'N': o->name = optarg; break;
        case 'p':
            if (!cli_parse_long(optarg, 0, 65535, &o->port))
                return cli_error("serve", EXIT_USAGE, "--port '%s': expected an integer 0..65535", optarg);
            break;
        case 's':
            if (!cli_parse_long(optarg, 1, 1024, &o->slots))
                return cli_error("serve", EXIT_USAGE, "--slots '%s': expected an integer 1..1024", optarg);
            break;
        case 'n':
            if (!cli_parse_long(optarg, 1, 1 << 24, &o->max_tokens))
                return cli_error("serve", EXIT_USAGE, "--max-tokens '%s': expected an integer 1..%d", optarg, 1 << 24);
            break;
        case 'q':
            if (!cli_parse_long(optarg, 0, 1 << 16, &o->queue))
                return cli_error("serve", EXIT_USAGE, "--queue '%s': expected an integer 0..%d", optarg, 1 << 16);
            break;
        case 'c':
            if (!cli_parse_long(optarg, 0, 1 << 20, &o->cache_mb))
                return cli_error("serve", EXIT_USAGE, "--cache-mb '%s': expected an integer 0..%d", optarg, 1 << 20);
            break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &o->threads))
                return cli_error("serve", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
            break;
        case 'd':
            if (!cli_parse_dtype(optarg, &o->dtype))
                return cli_error("serve", EXIT_USAGE, "--dtype '%s': expected f32, f16 or bf16", optarg);
            break;
        case 'h': fputs(usage, stdout); return -1;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_error("serve", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!o->model) {
        fputs(usage, stderr);
        return cli_error("serve", EXIT_USAGE, "--model is required");
    }
    chat_format f;
    if (o->chat_template && !chat_format_by_name(o->chat_template, &f))
        return cli_error("serve", EXIT_USAGE, "--chat-template '%s': expected chatml, zephyr or plain", o->chat_template);
    return 0;
}

static int is_dir(const char *path)
{
    struct stat sb;
    return path && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* config.json's eos_token_id (a number, or the first of a list); -1 when absent. */
static int32_t config_eos(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    char *text = malloc(1 << 20);
    const size_t n = text ? fread(text, 1, (1 << 20) - 1, fp) : 0;
    fclose(fp);
    cJSON *root = text ? cJSON_ParseWithLength(text, n) : NULL;
    free(text);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsArray(e)) e = cJSON_GetArrayItem(e, 0);
    const int32_t id = cJSON_IsNumber(e) && e->valuedouble >= 0 && e->valuedouble < INT32_MAX ? (int32_t)e->valuedouble : -1;
    cJSON_Delete(root);
    return id;
}

/* A listening TCP socket on host:port; the port it got in *bound. -1 after printing why. */
static int listen_on(const char *host, long port, int *bound, char *shown, size_t shown_len)
{
    char service[16];
    snprintf(service, sizeof service, "%ld", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        cli_error("serve", EXIT_RUNTIME, "--host %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, why = 0;
    for (const struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            why = errno;
            continue;
        }
        const int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0) {
            why = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        cli_error("serve", EXIT_RUNTIME, "cannot listen on %s port %ld: %s", host, port, strerror(why));
        return -1;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len = sizeof ss;
    char addr[NI_MAXHOST] = "", serv[NI_MAXSERV] = "";
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, len, addr, sizeof addr, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        cli_error("serve", EXIT_RUNTIME, "cannot read the listening socket's address: %s", strerror(errno));
        close(fd);
        return -1;
    }
    *bound = (int)strtol(serv, NULL, 10);
    snprintf(shown, shown_len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", addr, serv);
    return fd;
}

static const char *base_name(const char *path, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *slash = strrchr(buf, '/');
    return slash && slash[1] ? slash + 1 : buf;
}

/* The chat format: --chat-template, else the checkpoint's template, else plain. */
static void pick_chat_format(const options *o, const char *tok_dir, const mamba_tokenizer_t *tok, int32_t eos,
                             chat_format *out)
{
    char err[512] = "";
    int found = 0;
    const char *dirs[2] = {is_dir(o->model) ? o->model : NULL, tok_dir};
    chat_format_detect(NULL, NULL, out);
    for (int i = 0; i < 2 && !found; i++) {
        if (!dirs[i]) continue;
        found = chat_format_from_dir(dirs[i], out, err, sizeof err);
        if (found < 0) fprintf(stderr, "mamba serve: warning: %s; the chat format is plain\n", err);
        if (found < 0) found = 0;
    }
    if (!found && tok && eos >= 0) {
        size_t n = 0;
        const char *t = mamba_token_bytes(tok, eos, &n);
        if (t && n && n < sizeof out->eos) {
            memcpy(out->eos, t, n);
            out->eos[n] = 0;
        }
    }
    chat_format named;
    if (o->chat_template && chat_format_by_name(o->chat_template, &named)) out->kind = named.kind;
}

static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cmd_serve(int argc, char **argv)
{
    options o;
    const int prc = parse_options(argc, argv, &o);
    if (prc) return prc < 0 ? EXIT_OK : prc;
    /* every thread made from here on (OpenMP's, libmicrohttpd's, the loop) inherits the mask;
     * the main thread takes the signals with sigwait */
    sigset_t signals;
    block_signals(&signals);
    int rc = EXIT_RUNTIME;
    mamba_tokenizer_t *tok = NULL;
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    serve_metrics *metrics = NULL;
    serve_server srv;
    memset(&srv, 0, sizeof srv);
    srv.listen_fd = -1;
    char tok_path[4096] = "", tok_dir[4096] = "", name_buf[4096];
    if (o.tokenizer) {
        snprintf(tok_path, sizeof tok_path, "%s", o.tokenizer);
    } else if (is_dir(o.model)) {
        snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o.model);
        if (access(tok_path, R_OK) != 0) tok_path[0] = 0;
    }
    if (tok_path[0]) {
        if (mamba_tokenizer_load(tok_path, &tok) != MAMBA_OK) {
            cli_error("serve", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
            goto done;
        }
        snprintf(tok_dir, sizeof tok_dir, "%s", tok_path);
        if (!is_dir(tok_dir)) {
            char *d = dirname(tok_dir);
            memmove(tok_dir, d, strlen(d) + 1);
        }
    }
    if (!(ctx = cli_context("serve", o.backend, (int)o.threads))) goto done;
    if (!(m = cli_model("serve", ctx, o.model, o.dtype, 0))) goto done;
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    const size_t vocab = (size_t)info.config.vocab_size;
    int32_t eos = is_dir(o.model) ? config_eos(o.model) : -1;
    if (eos < 0 && tok && mamba_tokenizer_find(tok, "<|endoftext|>", &eos) != MAMBA_OK) eos = -1;
    size_t sample_vocab = vocab;
    if (tok) {
        const size_t tv = mamba_tokenizer_vocab_size(tok);
        if (tv > vocab)
            fprintf(stderr, "mamba serve: warning: the tokenizer has %zu ids, the model %zu: prompts with larger ids are refused\n",
                    tv, vocab);
        else
            sample_vocab = tv; /* the padding rows past the tokenizer's ids are never sampled */
    }
    if (!(metrics = serve_metrics_create())) {
        cli_error("serve", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    srv.model_name = o.name ? o.name : base_name(o.model, name_buf, sizeof name_buf);
    srv.model_vocab = vocab;
    srv.tok = tok;
    srv.api_key = o.api_key;
    srv.limits.max_tokens = (int)o.max_tokens;
    srv.slots = (size_t)o.slots;
    srv.started = (long long)time(NULL);
    srv.metrics = metrics;
    pick_chat_format(&o, tok_dir[0] ? tok_dir : NULL, tok, eos, &srv.chat);
    const serve_scheduler_options so = {(size_t)o.slots, (size_t)o.queue, (size_t)o.cache_mb << 20, 512, eos, sample_vocab,
                                        (int)o.threads};
    char err[512];
    if (!serve_scheduler_create(ctx, m, tok, &so, metrics, &srv.sched, err, sizeof err)) {
        cli_error("serve", EXIT_RUNTIME, "%s", err);
        goto done;
    }
    int port = 0;
    char shown[NI_MAXHOST + 16];
    const int fd = listen_on(o.host, o.port, &port, shown, sizeof shown);
    if (fd < 0) goto done;
    if (!serve_scheduler_start(srv.sched)) {
        close(fd);
        cli_error("serve", EXIT_RUNTIME, "cannot start the decoding thread");
        goto done;
    }
    if (!serve_http_start(&srv, fd, err, sizeof err)) {
        close(fd);
        cli_error("serve", EXIT_RUNTIME, "%s", err);
        goto done;
    }
    fprintf(stderr, "mamba serve: %s on %s (%s), %ld slots, tokenizer %s, chat format %s, eos %d\n", srv.model_name,
            mamba_context_backend(ctx), mamba_context_device(ctx), o.slots, tok_path[0] ? tok_path : "none",
            chat_format_name(&srv.chat), (int)eos);
    fprintf(stderr, "listening on http://%s\n", shown);
    fflush(stderr);
    int sig = 0;
    while (sigwait(&signals, &sig) != 0) {
    }
    fprintf(stderr, "mamba serve: %s: finishing running requests (up to %.0f s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
            SHUTDOWN_GRACE_S);
    serve_http_quiesce(&srv);
    serve_scheduler_shutdown(srv.sched, SHUTDOWN_GRACE_S);
    serve_http_drain(&srv, DRAIN_S);
    serve_http_stop(&srv);
    fprintf(stderr, "mamba serve: stopped\n");
    rc = EXIT_OK;
done:
    if (srv.sched) serve_scheduler_shutdown(srv.sched, 0);
    serve_http_stop(&srv);
    serve_scheduler_free(srv.sched);
    serve_metrics_free(metrics);
    mamba_model_free(m);
    mamba_context_free(ctx);
    mamba_tokenizer_free(tok);
    return rc;
}
