/*
 * mock-kafka: a Kafka-protocol broker for tests and the demo.
 *
 * Wraps librdkafka's mock cluster (rdkafka_mock.h): brokers that speak the real
 * Kafka wire protocol on real TCP ports on 127.0.0.1. Production uses Apache Kafka;
 * this is only for tests and `npm run demo`.
 *
 * Build:   cc -O2 -o mock-kafka mock-kafka.c -lrdkafka
 * Usage:   mock-kafka [--brokers N] [--partitions N] [--debug]
 *
 * On start it prints exactly one line on stdout:
 *     BOOTSTRAP 127.0.0.1:PORT[,127.0.0.1:PORT...]
 * then reads one command per line on stdin and answers each with one line,
 * `OK` or `ERR <message>`:
 *     ping
 *     create_topic <name> <partitions> <replication>
 *     broker_down <id>                (broker ids are 1..N; -1 = all)
 *     broker_up <id>
 *     push_errors <api_key> <err_code> [<err_code>...]
 *     clear_errors <api_key>
 *     set_rtt <broker_id> <ms>
 *     set_leader <topic> <partition> <broker_id>
 *     set_coordinator <group|transaction> <key> <broker_id>
 *     quit
 * EOF on stdin, `quit`, SIGTERM, SIGINT or SIGHUP (and, on Linux, the death of the
 * parent process) destroy the cluster and exit with status 0.
 *
 * --partitions: librdkafka 2.0.2 has no public API to change the partition count of
 * auto-created topics (fixed at 4). The option is accepted for forward compatibility
 * and only logged; create topics explicitly with create_topic instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_LINE 4096
#define MAX_ARGS 256

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
        (void)sig;
        stop_requested = 1;
}

#define SHUTDOWN_GRACE_MS 200

static void *shutdown_watchdog(void *arg) {
        struct timespec ts = {SHUTDOWN_GRACE_MS / 1000,
                              (SHUTDOWN_GRACE_MS % 1000) * 1000000L};
        (void)arg;
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
        fflush(stderr);
        _exit(0);
        return NULL;
}

static void reply_ok(void) {
        fputs("OK\n", stdout);
        fflush(stdout);
}

static void reply_err(const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        size_t i;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        /* Keep the reply on a single line. */
        for (i = 0; msg[i]; i++)
                if (msg[i] == '\n' || msg[i] == '\r')
                        msg[i] = ' ';
        fprintf(stdout, "ERR %s\n", msg);
        fflush(stdout);
}

static void reply_rd(rd_kafka_resp_err_t err) {
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                reply_ok();
        else
                reply_err("%s: %s", rd_kafka_err2name(err),
                          rd_kafka_err2str(err));
}

/* Parses a whole base-10 integer in [min, max]. Returns 0 on success. */
static int parse_long(const char *s, long min, long max, long *out) {
        char *end = NULL;
        long v;
        if (!s || !*s)
                return -1;
        errno = 0;
        v     = strtol(s, &end, 10);
        if (errno || !end || *end != '\0' || v < min || v > max)
                return -1;
        *out = v;
        return 0;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf) {
        (void)rk;
        fprintf(stderr, "mock-kafka: rdkafka %d %s: %s\n", level, fac, buf);
}

static void handle_command(rd_kafka_mock_cluster_t *mcluster, char *line,
                           int *quit) {
        char *argv[MAX_ARGS];
        int argc = 0;
        char *save = NULL;
        char *tok;
        long a, b, c;

        for (tok = strtok_r(line, " \t\r\n", &save); tok && argc < MAX_ARGS;
             tok = strtok_r(NULL, " \t\r\n", &save))
                argv[argc++] = tok;
        if (tok) {
                reply_err("too many arguments (max %d)", MAX_ARGS - 1);
                return;
        }

        if (argc == 0) {
                reply_err("empty command");
                return;
        }

        if (!strcmp(argv[0], "ping")) {
                reply_ok();

        } else if (!strcmp(argv[0], "quit")) {
                reply_ok();
                *quit = 1;

        } else if (!strcmp(argv[0], "create_topic")) {
                if (argc != 4 || parse_long(argv[2], 1, 100000, &a) ||
                    parse_long(argv[3], 1, 1000, &b)) {
                        reply_err("usage: create_topic <name> <partitions>=1.. "
                                  "<replication>=1..");
                        return;
                }
                reply_rd(rd_kafka_mock_topic_create(mcluster, argv[1], (int)a,
                                                    (int)b));

        } else if (!strcmp(argv[0], "broker_down") ||
                   !strcmp(argv[0], "broker_up")) {
                if (argc != 2 || parse_long(argv[1], -1, INT32_MAX, &a)) {
                        reply_err("usage: %s <broker_id>", argv[0]);
                        return;
                }
                if (!strcmp(argv[0], "broker_down"))
                        reply_rd(rd_kafka_mock_broker_set_down(mcluster,
                                                               (int32_t)a));
                else
                        reply_rd(
                            rd_kafka_mock_broker_set_up(mcluster, (int32_t)a));

        } else if (!strcmp(argv[0], "push_errors")) {
                rd_kafka_resp_err_t errs[MAX_ARGS];
                int i;
                if (argc < 3 || parse_long(argv[1], 0, INT16_MAX, &a)) {
                        reply_err("usage: push_errors <api_key> <err_code> "
                                  "[<err_code>...]");
                        return;
                }
                for (i = 2; i < argc; i++) {
                        if (parse_long(argv[i], INT32_MIN, INT32_MAX, &b)) {
                                reply_err("bad error code '%s'", argv[i]);
                                return;
                        }
                        errs[i - 2] = (rd_kafka_resp_err_t)b;
                }
                rd_kafka_mock_push_request_errors_array(
                    mcluster, (int16_t)a, (size_t)(argc - 2), errs);
                reply_ok();

        } else if (!strcmp(argv[0], "clear_errors")) {
                if (argc != 2 || parse_long(argv[1], 0, INT16_MAX, &a)) {
                        reply_err("usage: clear_errors <api_key>");
                        return;
                }
                rd_kafka_mock_clear_request_errors(mcluster, (int16_t)a);
                reply_ok();

        } else if (!strcmp(argv[0], "set_rtt")) {
                if (argc != 3 || parse_long(argv[1], -1, INT32_MAX, &a) ||
                    parse_long(argv[2], 0, INT_MAX, &b)) {
                        reply_err("usage: set_rtt <broker_id> <ms>");
                        return;
                }
                reply_rd(rd_kafka_mock_broker_set_rtt(mcluster, (int32_t)a,
                                                      (int)b));

        } else if (!strcmp(argv[0], "set_leader")) {
                if (argc != 4 || parse_long(argv[2], 0, INT32_MAX, &a) ||
                    parse_long(argv[3], -1, INT32_MAX, &b)) {
                        reply_err("usage: set_leader <topic> <partition> "
                                  "<broker_id>");
                        return;
                }
                reply_rd(rd_kafka_mock_partition_set_leader(
                    mcluster, argv[1], (int32_t)a, (int32_t)b));

        } else if (!strcmp(argv[0], "set_coordinator")) {
                if (argc != 4 ||
                    (strcmp(argv[1], "group") &&
                     strcmp(argv[1], "transaction")) ||
                    parse_long(argv[3], INT32_MIN, INT32_MAX, &c)) {
                        reply_err("usage: set_coordinator "
                                  "<group|transaction> <key> <broker_id>");
                        return;
                }
                reply_rd(rd_kafka_mock_coordinator_set(mcluster, argv[1],
                                                       argv[2], (int32_t)c));

        } else {
                reply_err("unknown command '%s'", argv[0]);
        }
}

static void usage(const char *prog) {
        fprintf(stderr,
                "usage: %s [--brokers N] [--partitions N] [--debug]\n", prog);
}

int main(int argc, char **argv) {
        long brokers = 1, partitions = 0;
        int debug = 0;
        int i;
        char errstr[512];
        rd_kafka_conf_t *conf;
        rd_kafka_t *rk;
        rd_kafka_mock_cluster_t *mcluster;
        const char *bootstraps;
        struct sigaction sa;
        sigset_t termsigs;
        char buf[MAX_LINE];
        size_t len     = 0;
        int quit       = 0;
        int overlong   = 0;
        pid_t orig_ppid = getppid();

        for (i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
                        if (parse_long(argv[++i], 1, 64, &brokers)) {
                                fprintf(stderr,
                                        "mock-kafka: --brokers must be 1..64\n");
                                return 2;
                        }
                } else if (!strcmp(argv[i], "--partitions") && i + 1 < argc) {
                        if (parse_long(argv[++i], 1, 100000, &partitions)) {
                                fprintf(stderr, "mock-kafka: --partitions must "
                                                "be >= 1\n");
                                return 2;
                        }
                } else if (!strcmp(argv[i], "--debug")) {
                        debug = 1;
                } else if (!strcmp(argv[i], "--help") ||
                           !strcmp(argv[i], "-h")) {
                        usage(argv[0]);
                        return 0;
                } else {
                        usage(argv[0]);
                        return 2;
                }
        }

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0; /* no SA_RESTART: a blocking read() returns EINTR */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);

#ifdef __linux__
        /* Die with the parent even if it leaks our stdin pipe. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != orig_ppid)
                stop_requested = 1; /* parent already gone */
#else
        (void)orig_ppid;
#endif

        /* librdkafka and the mock cluster start their own threads: keep the
         * termination signals blocked there so that they are delivered to this
         * thread and interrupt its read() of stdin. */
        sigemptyset(&termsigs);
        sigaddset(&termsigs, SIGTERM);
        sigaddset(&termsigs, SIGINT);
        sigaddset(&termsigs, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &termsigs, NULL);

        conf = rd_kafka_conf_new();
        rd_kafka_conf_set_log_cb(conf, log_cb);
        if (rd_kafka_conf_set(conf, "log_level", debug ? "7" : "4", errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK ||
            (debug && rd_kafka_conf_set(conf, "debug", "mock,broker", errstr,
                                        sizeof(errstr)) != RD_KAFKA_CONF_OK)) {
                fprintf(stderr, "mock-kafka: config: %s\n", errstr);
                return 1;
        }

        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "mock-kafka: rd_kafka_new failed: %s\n", errstr);
                return 1;
        }

        mcluster = rd_kafka_mock_cluster_new(rk, (int)brokers);
        if (!mcluster) {
                fprintf(stderr,
                        "mock-kafka: rd_kafka_mock_cluster_new failed\n");
                rd_kafka_destroy(rk);
                return 1;
        }

        if (partitions > 0 && partitions != 4)
                fprintf(stderr,
                        "mock-kafka: note: librdkafka %s cannot change the "
                        "partition count of auto-created topics (4); "
                        "--partitions %ld ignored, use create_topic\n",
                        rd_kafka_version_str(), partitions);

        pthread_sigmask(SIG_UNBLOCK, &termsigs, NULL);

        bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
        fprintf(stdout, "BOOTSTRAP %s\n", bootstraps);
        fflush(stdout);
        fprintf(stderr, "mock-kafka: librdkafka %s, %ld broker(s) at %s\n",
                rd_kafka_version_str(), brokers, bootstraps);

        while (!quit && !stop_requested) {
                ssize_t n;
                char *nl;

                if (len >= sizeof(buf) - 1) {
                        /* Line too long: drop it and answer once. */
                        overlong = 1;
                        len      = 0;
                }

                n = read(STDIN_FILENO, buf + len, sizeof(buf) - 1 - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        fprintf(stderr, "mock-kafka: stdin: %s\n",
                                strerror(errno));
                        break;
                }
                if (n == 0)
                        break; /* EOF: parent closed stdin or died */
                len += (size_t)n;
                buf[len] = '\0';

                while (!quit && (nl = memchr(buf, '\n', len)) != NULL) {
                        size_t linelen = (size_t)(nl - buf);
                        *nl            = '\0';
                        if (overlong) {
                                reply_err("command line too long");
                                overlong = 0;
                        } else {
                                handle_command(mcluster, buf, &quit);
                        }
                        len -= linelen + 1;
                        memmove(buf, nl + 1, len);
                        buf[len] = '\0';
                }
        }

        /* rd_kafka_mock_cluster_destroy() often takes a full second (the mock
         * thread's poll interval). The cluster holds nothing worth saving, so
         * give the orderly shutdown a short grace period and then exit anyway;
         * the kernel closes the listening sockets. */
        fflush(stdout);
        {
                pthread_t watchdog;
                if (pthread_create(&watchdog, NULL, shutdown_watchdog, NULL) ==
                    0)
                        pthread_detach(watchdog);
        }
        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(rk);
        return 0;
}
