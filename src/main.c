/* main.c — the usher command line. Exit 0 = ok, 1 = runtime failure, 2 = usage or config. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "config.h"
#include "consumer.h"
#include "dlq_replay.h"
#include "log.h"
#include "registry.h"
#include "stats.h"

static const char usage_text[] =
    "usage: usher COMMAND [OPTIONS]\n"
    "\n"
    "Consumes identity-provider user events from Kafka and runs handlers on each.\n"
    "\n"
    "commands:\n"
    "  run            consume and process until SIGTERM/SIGINT, then drain and exit\n"
    "  check-config   validate the configuration and exit\n"
    "  stats          print the metrics kept in Redis\n"
    "  dlq replay     put dead-lettered records back on their original topic\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   configuration file (default $USHER_CONFIG or config/usher.conf)\n"
    "  -h, --help          help for usher or for a command\n"
    "  -V, --version       print the version\n";

static const char run_help[] =
    "usage: usher run [-c FILE]\n"
    "Joins the consumer group and processes records until SIGTERM or SIGINT; then finishes\n"
    "in-flight work within [usher] drain_timeout_ms, commits, leaves the group, exits 0.\n";
static const char check_help[] =
    "usage: usher check-config [-c FILE]\n"
    "Validates the configuration (keys, values, handlers, librdkafka properties) without\n"
    "connecting anywhere. Errors are printed as FILE:LINE: message; exit 2 on error.\n";
static const char stats_help[] =
    "usage: usher stats [-c FILE] [--json] [--day YYYY-MM-DD]\n"
    "Prints event counts (per type, per UTC day of the event), unique users per day,\n"
    "handler outcomes and dead letters from Redis.\n";

/* Loads the config, resolves its handlers and, when init is set, initializes them (handlers
 * read files and check values there, but connect nowhere). Prints errors; returns 0 or 2. */
static int load(const char *path, usher_config *cfg, usher_registry *reg, bool init)
{
    char err[1024];

    if (usher_config_load(path, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (usher_registry_resolve(cfg, reg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        usher_config_free(cfg);
        return 2;
    }
    if (init && usher_registry_init(reg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        usher_registry_free(reg);
        usher_config_free(cfg);
        return 2;
    }
    return 0;
}

/* Parses the options shared by every command. Returns -1 to continue, else an exit code. */
static int parse_common(int argc, char **argv, const char *help, const char **config,
                        bool *json, const char **day, usher_replay_filter *filter)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "help", no_argument, NULL, 'h' },
        { "json", no_argument, NULL, 'j' },         { "day", required_argument, NULL, 'd' },
        { "handler", required_argument, NULL, 'H' }, { "reason", required_argument, NULL, 'r' },
        { "dry-run", no_argument, NULL, 'n' },      { NULL, 0, NULL, 0 },
    };
    int ch;

    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            *config = optarg;
            break;
        case 'h':
            fputs(help, stdout);
            return 0;
        case 'j':
        case 'd':
            if (json == NULL)
                goto bad;
            if (ch == 'j') {
                *json = true;
            } else {
                int y, m, d;
                char tail;
                if (sscanf(optarg, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 ||
                    strlen(optarg) != 10 || m < 1 || m > 12 || d < 1 || d > 31) {
                    fprintf(stderr, "usher: --day wants YYYY-MM-DD, not '%s'\n", optarg);
                    return 2;
                }
                *day = optarg;
            }
            break;
        case 'H':
        case 'r':
        case 'n':
            if (filter == NULL)
                goto bad;
            if (ch == 'H')
                filter->handler = optarg;
            else if (ch == 'r')
                filter->reason = optarg;
            else
                filter->dry_run = true;
            break;
        default:
            goto bad;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "usher: unexpected argument '%s'\n", argv[optind]);
        goto bad;
    }
    return -1;
bad:
    fputs(help, stderr);
    return 2;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *day = NULL, *cmd = NULL;
    usher_config cfg = { 0 };
    usher_registry reg = { 0 };
    usher_replay_filter filter = { 0 };
    bool json = false;
    int rc;

    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("usher %s (librdkafka %s)\n", USHER_VERSION, rd_kafka_version_str());
        return 0;
    }
    if (strcmp(cmd, "run") == 0 || strcmp(cmd, "check-config") == 0) {
        bool run = strcmp(cmd, "run") == 0;
        if ((rc = parse_common(argc - 1, argv + 1, run ? run_help : check_help, &config, NULL,
                               NULL, NULL)) >= 0)
            return rc;
        config = usher_config_path(config);
        if ((rc = load(config, &cfg, &reg, true)) != 0)
            return rc;
        if (!run) {
            printf("%s: ok (%zu handler(s) enabled)\n", config, reg.count);
            usher_registry_free(&reg);
            usher_config_free(&cfg);
            return 0;
        }
        usher_log_set_level(cfg.log_level);
        curl_global_init(CURL_GLOBAL_DEFAULT); /* before any worker thread exists */
        rc = usher_run(&cfg, &reg);
        curl_global_cleanup();
        usher_config_free(&cfg);
        return rc;
    }
    if (strcmp(cmd, "stats") == 0) {
        if ((rc = parse_common(argc - 1, argv + 1, stats_help, &config, &json, &day, NULL)) >= 0)
            return rc;
        config = usher_config_path(config);
        if ((rc = load(config, &cfg, &reg, false)) != 0)
            return rc;
        usher_registry_free(&reg);
        rc = usher_stats(&cfg, json, day, stdout);
        usher_config_free(&cfg);
        return rc;
    }
    if (strcmp(cmd, "dlq") == 0) {
        if (argc < 3 || strcmp(argv[2], "replay") != 0) {
            if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
                fputs(usher_replay_help, stdout);
                return 0;
            }
            fputs(usher_replay_help, stderr);
            return 2;
        }
        if ((rc = parse_common(argc - 2, argv + 2, usher_replay_help, &config, NULL, NULL,
                               &filter)) >= 0)
            return rc;
        config = usher_config_path(config);
        if ((rc = load(config, &cfg, &reg, false)) != 0)
            return rc;
        usher_registry_free(&reg);
        usher_log_set_level(cfg.log_level);
        rc = usher_dlq_replay(&cfg, &filter);
        usher_config_free(&cfg);
        return rc;
    }
    fprintf(stderr, "usher: unknown command '%s'\n\n%s", cmd, usage_text);
    return 2;
}
