#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from the distribution's packages.
#
#   scripts/postgres.sh start DIR [WATCH_PID]   prints the superuser URL on stdout
#   scripts/postgres.sh restart|pause|resume DIR
#   scripts/postgres.sh stop DIR
#
# Replication, for the failover tests (a primary and its streaming standby on loopback):
#   standby PRIMARY_DIR DIR [WATCH_PID]  a standby of the server in PRIMARY_DIR, made with
#                                        pg_basebackup and streaming; prints its URL
#   synchronous PRIMARY_DIR on|off       whether the primary's commits wait for it
#                                        (synchronous_standby_names = 'ks_standby')
#   promote DIR                          the standby becomes a primary
#   kill DIR                             SIGKILL to the server and its processes
#   freeze|thaw DIR                      SIGSTOP / SIGCONT to every process of it
#   start-stopped DIR                    start a killed server as it is (an old primary
#                                        comes back as a primary)
#   rejoin DIR NEW_PRIMARY_DIR [WATCH_PID]
#                                        an old primary (stopped or killed) becomes a
#                                        streaming standby of the promoted one: pg_rewind,
#                                        then started as a standby
#
# `start` installs the server package when no initdb is found (scripts/install-package.sh, as
# root), runs initdb in DIR/data as an unprivileged user (PostgreSQL refuses to run as
# root), with a random superuser password and scram-sha-256 on loopback only, and
# starts it on a free loopback port. With WATCH_PID, a watcher stops the server and
# removes DIR once that process is gone, so a test run that dies leaves nothing behind.
# The server runs with fsync on: the tests check acknowledged writes against it.
# With PG_TLS_DIR (holding server.crt and server.key, as scripts/tls-certificates.sh
# makes them), it accepts TLS connections only.
set -euo pipefail

usage="usage: postgres.sh start|restart|pause|resume|stop|standby|synchronous|promote|kill|freeze|thaw|start-stopped|rejoin DIR [...]"
command=${1:?$usage}
dir=${2:?$usage}
watch_pid=${3:-}

find_bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$found" && -x "$found/initdb" ]]; then
        echo "$found"
        return
    fi
    if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir
    fi
}

# With a PID: once that process is gone, stop the server of DIR and remove it. In a
# session of its own, so that whatever ends the test's process group leaves it running.
watch() {
    local pid=$1 target=$2 script
    [[ -n "$pid" ]] || return 0
    script=$(readlink -f "$0")
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3"' \
        watcher "$pid" "$script" "$target" </dev/null >/dev/null 2>&1 &
    disown
}

# Sends a signal to the server whose data directory is in $home, and to its processes.
signal_server() {
    local postmaster children
    [[ -f "$home/data/postmaster.pid" ]] || return 0
    postmaster=$(head -n 1 "$home/data/postmaster.pid")
    # Only a live postmaster of this directory: a stale file's PID may be anyone's now.
    tr '\0' ' ' 2>/dev/null <"/proc/$postmaster/cmdline" | grep -qF -- "$home/data" || return 0
    children=$(ps -o pid= --ppid "$postmaster" || true)
    # The postmaster first, so that it cannot start a replacement child.
    # shellcheck disable=SC2086
    kill -s "$1" "$postmaster" $children 2>/dev/null || true
}

# Starts the server of $home/data (on $port) as a streaming standby of the server on
# port $1, named ks_standby to it.
follow() {
    # Later lines win: a copied configuration names the other server's port and socket.
    printf "port = %s\nunix_socket_directories = '%s'\nhot_standby = on\nprimary_conninfo = 'host=127.0.0.1 port=%s user=postgres password=%s application_name=ks_standby'\n" \
        "$port" "$home" "$1" "$password" | run_as sh -c "umask 077; cat >>'$home/data/postgresql.conf'"
    run_as touch "$home/data/standby.signal"
    run_as "$bin/pg_ctl" -D "$home/data" -l "$home/server.log" -w -t 60 start >/dev/null ||
        { cat "$home/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
}

# Waits until the server on port $1 sees ks_standby streaming: the tests count on the
# standby receiving what the primary commits from then on.
wait_streaming() {
    local streaming=0
    for _ in $(seq 1 200); do
        streaming=$(PGPASSWORD=$password "$bin/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atc \
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'ks_standby' AND state = 'streaming'" \
            2>/dev/null || echo 0)
        [[ "$streaming" == 1 ]] && return 0
        sleep 0.1
    done
    echo "postgres.sh: the standby does not stream; its log ends:" >&2
    tail -n 20 "$home/server.log" >&2
    return 1
}

# The user the server runs as: never root.
run_as() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$server_user" -- "$@"
    else
        "$@"
    fi
}

case "$command" in
start)
    bin=$(find_bin)
    if [[ -z "$bin" ]]; then
        "$(dirname "$(readlink -f "$0")")/install-package.sh" postgresql PostgreSQL
        bin=$(find_bin)
        [[ -n "$bin" ]] || { echo "postgres.sh: no initdb after installing postgresql" >&2; exit 1; }
    fi
    server_user=$(id -un)
    if [[ $(id -u) -eq 0 ]]; then
        server_user=keyservice-pg
        id "$server_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$server_user"
    fi
    mkdir -p "$dir"
    # The server's own files live where its user can reach them, whatever DIR's parents
    # allow; DIR records where.
    home=$(mktemp -d /tmp/keyservice-pg.XXXXXX)
    chmod 0700 "$home"
    [[ $(id -u) -eq 0 ]] && chown "$server_user" "$home"
    echo "$home" >"$dir/home"
    password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s\n' "$password" >"$dir/password"
    chmod 0600 "$dir/password"
    run_as sh -c "umask 077; cat >'$home/password'" <"$dir/password"
    run_as "$bin/initdb" -D "$home/data" -U postgres --pwfile="$home/password" --auth=scram-sha-256 \
        --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; rm -rf "$home"; exit 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    run_as sh -c "cat >>'$home/data/postgresql.conf'" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$home'
max_connections = 300
fsync = on
synchronous_commit = on
shared_buffers = 64MB
log_min_messages = warning
wal_log_hints = on
wal_keep_size = 256MB
EOF
    if [[ -n "${PG_TLS_DIR:-}" ]]; then
        run_as sh -c "umask 077; cat >'$home/server.crt'" <"$PG_TLS_DIR/server.crt"
        run_as sh -c "umask 077; cat >'$home/server.key'" <"$PG_TLS_DIR/server.key"
        printf "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" "$home/server.crt" "$home/server.key" |
            run_as sh -c "cat >>'$home/data/postgresql.conf'"
        printf 'local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n' |
            run_as sh -c "cat >'$home/data/pg_hba.conf'"
    fi
    run_as "$bin/pg_ctl" -D "$home/data" -l "$home/server.log" -w -t 60 start >/dev/null ||
        { cat "$home/server.log" >&2; rm -rf "$home"; exit 1; }
    echo "$port" >"$dir/port"
    echo "$bin" >"$dir/bin"
    watch "$watch_pid" "$dir"
    echo "postgres://postgres:$password@127.0.0.1:$port/postgres"
    ;;
restart | pause | resume)
    # pause stops the server keeping its data; resume starts it again.
    bin=$(cat "$dir/bin")
    home=$(cat "$dir/home")
    server_user=$(stat -c %U "$home/data")
    action=$command
    [[ $command == pause ]] && action=stop
    [[ $command == resume ]] && action=start
    run_as "$bin/pg_ctl" -D "$home/data" -l "$home/server.log" -w -t 60 -m fast "$action" >/dev/null
    ;;
stop)
    if [[ -f "$dir/bin" && -f "$dir/home" ]]; then
        bin=$(cat "$dir/bin")
        home=$(cat "$dir/home")
        if [[ -d "$home/data" ]]; then
            server_user=$(stat -c %U "$home/data")
            # A frozen server cannot shut down; one that will not is killed.
            signal_server CONT
            run_as "$bin/pg_ctl" -D "$home/data" -w -t 30 -m fast stop >/dev/null 2>&1 ||
                signal_server KILL
        fi
        [[ "$home" == /tmp/keyservice-pg.* ]] && rm -rf "$home"
    fi
    rm -rf "$dir"
    ;;
standby)
    primary_dir=$dir
    dir=${3:?usage: postgres.sh standby PRIMARY_DIR DIR [WATCH_PID]}
    watch_pid=${4:-}
    bin=$(cat "$primary_dir/bin")
    primary_home=$(cat "$primary_dir/home")
    primary_port=$(cat "$primary_dir/port")
    server_user=$(stat -c %U "$primary_home/data")
    mkdir -p "$dir"
    home=$(mktemp -d /tmp/keyservice-pg.XXXXXX)
    chmod 0700 "$home"
    [[ $(id -u) -eq 0 ]] && chown "$server_user" "$home"
    echo "$home" >"$dir/home"
    cp "$primary_dir/password" "$dir/password"
    password=$(cat "$dir/password")
    run_as env PGPASSWORD="$password" "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
        -D "$home/data" --checkpoint=fast --wal-method=stream >"$dir/basebackup.log" 2>&1 ||
        { cat "$dir/basebackup.log" >&2; rm -rf "$home"; exit 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "$bin" >"$dir/bin"
    watch "$watch_pid" "$dir"
    follow "$primary_port"
    wait_streaming "$primary_port" || exit 1
    echo "postgres://postgres:$password@127.0.0.1:$port/postgres"
    ;;
synchronous)
    mode=${3:?usage: postgres.sh synchronous PRIMARY_DIR on|off}
    bin=$(cat "$dir/bin")
    names="''"
    [[ $mode == on ]] && names="'ks_standby'"
    PGPASSWORD=$(cat "$dir/password") "$bin/psql" -h 127.0.0.1 -p "$(cat "$dir/port")" -U postgres -d postgres \
        -qc "ALTER SYSTEM SET synchronous_standby_names = $names" -c "SELECT pg_reload_conf()" >/dev/null
    ;;
promote)
    bin=$(cat "$dir/bin")
    home=$(cat "$dir/home")
    server_user=$(stat -c %U "$home/data")
    run_as "$bin/pg_ctl" -D "$home/data" -w -t 60 promote >/dev/null
    ;;
kill | freeze | thaw)
    home=$(cat "$dir/home")
    signal=KILL
    [[ $command == freeze ]] && signal=STOP
    [[ $command == thaw ]] && signal=CONT
    postmaster=$(head -n 1 "$home/data/postmaster.pid")
    signal_server "$signal"
    if [[ $command == kill ]]; then
        for _ in $(seq 1 100); do kill -0 "$postmaster" 2>/dev/null || break; sleep 0.05; done
    fi
    ;;
start-stopped)
    bin=$(cat "$dir/bin")
    home=$(cat "$dir/home")
    server_user=$(stat -c %U "$home/data")
    rm -f "$home/data/postmaster.pid"
    run_as "$bin/pg_ctl" -D "$home/data" -l "$home/server.log" -w -t 60 start >/dev/null
    ;;
rejoin)
    primary_dir=${3:?usage: postgres.sh rejoin DIR NEW_PRIMARY_DIR [WATCH_PID]}
    watch_pid=${4:-}
    bin=$(cat "$dir/bin")
    home=$(cat "$dir/home")
    port=$(cat "$dir/port")
    password=$(cat "$dir/password")
    server_user=$(stat -c %U "$home/data")
    primary_port=$(cat "$primary_dir/port")
    # Stopped, however it ended: a server still running here would be a second primary.
    signal_server CONT
    run_as "$bin/pg_ctl" -D "$home/data" -w -t 30 -m fast stop >/dev/null 2>&1 || signal_server KILL
    rm -f "$home/data/postmaster.pid"
    # pg_rewind reads the source's timeline from its control file, which a promotion
    # updates only at the next checkpoint.
    PGPASSWORD=$password "$bin/psql" -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres -qc CHECKPOINT
    # Back to where the timelines parted, then the new primary's changes since (it runs
    # crash recovery first when the server was killed). It copies the new primary's
    # configuration files too, hence `follow` naming this server's own port and socket.
    run_as "$bin/pg_rewind" -D "$home/data" --progress \
        --source-server="host=127.0.0.1 port=$primary_port user=postgres password=$password dbname=postgres" \
        >"$dir/rewind.log" 2>&1 || { cat "$dir/rewind.log" >&2; exit 1; }
    # Whether a standby must confirm commits is the primary's setting: a standby that is
    # promoted later with one named, and no standby of its own, would make every commit
    # wait forever.
    run_as sed -i '/^synchronous_standby_names/d' "$home/data/postgresql.auto.conf"
    follow "$primary_port"
    watch "$watch_pid" "$dir"
    wait_streaming "$primary_port" || { cat "$dir/rewind.log" >&2; exit 1; }
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
