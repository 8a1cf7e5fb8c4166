#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% No database wait holds the port hostage (c_src/db_wait.c), and an export survives a server
%% that refuses COPY (python/uro_rec/export.py). The real port against real servers:
%%
%%   A  a silent listener (accepts TCP, never answers): the call answers `timeout` at its
%%      deadline; without a deadline the connect gives up at connect_timeout (08001)
%%   B  a listener that relays the startup to PostgreSQL and then stops forwarding: `timeout`
%%   C  pg_sleep(20) with timeout_ms 2000, through db_execute and through a streamed SQL
%%      source: `timeout` within about 100 ms of the deadline, the statement cancelled on the
%%      server, the connection reused
%%   D  a server of our own restarted during a call; then frozen (SIGSTOP) during a call and
%%      restarted: an error at once, then `timeout` at the deadline
%%   E  an export whose COPY the server refuses (42501, {fault, refuse_copy}): every row
%%      written with INSERT, logged once, counted in info; then an export whose second
%%      writer's connection stalls: `timeout` at the deadline (a writer thread's wait)
%% After each: `ping` answers and the next database call works.
%%
%%   escript test/db_waits_test.escript PORT_EXE
%%
%% Environment: URO_REC_TEST_PG (default postgresql://postgres@127.0.0.1:5432, database
%% `test`). D starts a PostgreSQL of its own (as root, through runuser: initdb as user
%% postgres, a free port, a socket directory under /tmp) and stops it, killing it if frozen;
%% the shared server is never restarted. Tables and the
%% model have a random suffix and are dropped at the end. A reply more than LATE_MS after
%% its deadline fails the case (the figure printed is how late each was).
-mode(compile).

-define(LATE_MS, 300).
-define(PG_BIN, "/usr/lib/postgresql/15/bin").

main([Exe]) ->
    Suffix = integer_to_list(erlang:unique_integer([positive]) rem 100000) ++ "_" ++ os:getpid(),
    Server = case os:getenv("URO_REC_TEST_PG") of
                 false -> "postgresql://postgres@127.0.0.1:5432";
                 S -> S
             end,
    Tmp = filename:join("/tmp", "uro_db_waits_" ++ Suffix),
    ok = filelib:ensure_dir(filename:join(Tmp, "x")),
    Ok = sql_dir(Tmp, "ok", "SELECT 1"),
    Sleep = sql_dir(Tmp, "sleep", "SELECT pg_sleep(20)"),
    ets:new(proxy, [named_table, public]),
    Ctx = #{exe => filename:absname(Exe), suffix => Suffix, server => Server, tmp => Tmp,
            ok_dir => Ok, sleep_dir => Sleep},
    Cases = [{"A  silent listener: timeout at the deadline; connect_timeout", fun case_silent/1},
             {"A2 a connect timeout that is no number keeps the 5 s bound", fun case_bad_setting/1},
             {"B  startup answered, then silence: timeout at the deadline", fun case_stall/1},
             {"C  pg_sleep(20), timeout_ms 2000: cancelled, connection reused", fun case_sleep/1},
             {"D  own server restarted, then frozen and restarted, mid-call", fun case_restart/1},
             {"E  export whose COPY is refused (42501): INSERT, every row", fun case_copy_refused/1}],
    Only = case os:getenv("CASES") of false -> all; L -> string:split(L, ",", all) end,
    Results = [run_case(Name, Fun, Ctx) || {Name, Fun} <- Cases,
                                            Only =:= all orelse lists:member(hd(string:split(Name, " ")), Only)],
    os:cmd("rm -rf " ++ Tmp),
    Passed = length([ok || ok <- Results]),
    Failed = length(Results) - Passed,
    io:format("~b passed, ~b failed~n", [Passed, Failed]),
    halt(if Failed > 0 -> 1; true -> 0 end);
main(_) ->
    io:format("usage: escript test/db_waits_test.escript PORT_EXE~n"),
    halt(2).

run_case(Name, Fun, Ctx) ->
    T0 = erlang:monotonic_time(millisecond),
    R = try {ok, Fun(Ctx)}
        catch Class:Reason:Stack -> {failed, {Class, Reason, lists:sublist(Stack, 3)}}
        end,
    Ms = erlang:monotonic_time(millisecond) - T0,
    case R of
        {ok, D} ->
            io:format("ok    ~-62s ~6.1f s  ~ts~n", [Name, Ms / 1000, D]),
            ok;
        {failed, Why} ->
            io:format("FAIL  ~-62s ~6.1f s~n      ~tP~n", [Name, Ms / 1000, Why, 40]),
            failed
    end.

sql_dir(Tmp, Name, Sql) ->
    Dir = filename:join(Tmp, Name),
    ok = file:make_dir(Dir),
    ok = file:write_file(filename:join(Dir, Name ++ ".sql"), Sql),
    list_to_binary(Dir).

%% ---- the cases ----------------------------------------------------------------------------------

case_silent(#{ok_dir := Ok} = Ctx) ->
    Proxy = proxy_start(silent, upstream(Ctx)),
    P = start_port(Ctx, proxy_url(Proxy, "uro_db_waits"), [{"URO_REC_DB_CONNECT_TIMEOUT", "2"}]),
    try
        %% the call's deadline comes first (connect_timeout is 2 s here, then 5 s below)
        Late1 = timed_out(P, {apply_schema, Ok}, 1000),
        {ok, pong} = call(P, ping),
        timer:sleep(300), %% the reconnect backoff after a failed attempt
        %% no deadline: connect_timeout (URO_REC_DB_CONNECT_TIMEOUT=2) ends the connect
        T0 = erlang:monotonic_time(millisecond),
        {error, {database, #{sqlstate := <<"08001">>, message := M}}} = call(P, {apply_schema, Ok}),
        Ms = erlang:monotonic_time(millisecond) - T0,
        true = Ms >= 1900 andalso Ms < 2000 + ?LATE_MS,
        {match, _} = re:run(M, "connect_timeout \\(2 s\\)"),
        {ok, pong} = call(P, ping),
        %% the same listener starts relaying: the next call works
        proxy_mode(Proxy, forward),
        timer:sleep(500),
        {ok, [<<"ok.sql">>]} = call(P, {apply_schema, Ok}, #{timeout_ms => 5000}),
        {ok, #{database := #{timeouts := 2, connected := true}}} = call(P, info),
        fmt("timeout ~b ms late; connect_timeout 2 s after ~b ms", [Late1, Ms])
    after
        stop_port(P),
        proxy_stop(Proxy)
    end.

%% atoi read "-1" or "abc" as 0, which libpq takes as no bound at all.
case_bad_setting(#{ok_dir := Ok} = Ctx) ->
    Proxy = proxy_start(silent, upstream(Ctx)),
    P = start_port(Ctx, proxy_url(Proxy, "uro_db_waits"), [{"URO_REC_DB_CONNECT_TIMEOUT", "-1"}]),
    try
        T0 = erlang:monotonic_time(millisecond),
        {error, {database, #{sqlstate := <<"08001">>, message := M}}} = call(P, {apply_schema, Ok}),
        Ms = erlang:monotonic_time(millisecond) - T0,
        true = Ms >= 4900 andalso Ms < 5000 + ?LATE_MS,
        {match, _} = re:run(M, "connect_timeout \\(5 s\\)"),
        {ok, pong} = call(P, ping),
        fmt("URO_REC_DB_CONNECT_TIMEOUT=-1: the default, connect refused after ~b ms", [Ms])
    after
        stop_port(P),
        proxy_stop(Proxy)
    end.

case_stall(#{ok_dir := Ok} = Ctx) ->
    Proxy = proxy_start(stall, upstream(Ctx)),
    P = start_port(Ctx, proxy_url(Proxy, "uro_db_waits"), []),
    try
        Late = timed_out(P, {apply_schema, Ok}, 2000),
        {ok, pong} = call(P, ping),
        proxy_mode(Proxy, forward),
        %% the stuck connection is closed and a new one made
        {ok, [<<"ok.sql">>]} = call(P, {apply_schema, Ok}, #{timeout_ms => 5000}),
        {ok, #{database := #{timeouts := 1, cancels := 1, connects := 2}}} = call(P, info),
        fmt("timeout ~b ms late; reconnected", [Late])
    after
        stop_port(P),
        proxy_stop(Proxy)
    end.

case_sleep(#{ok_dir := Ok, sleep_dir := Sleep, suffix := Suffix} = Ctx) ->
    App = "uro_db_waits_c_" ++ Suffix,
    P = start_port(Ctx, url(Ctx, "test", App), []),
    try
        %% db_execute (apply_schema runs the file's statement)
        Late1 = timed_out(P, {apply_schema, Sleep}, 2000),
        {ok, pong} = call(P, ping),
        0 = active_sleeps(Ctx, App), %% cancelled on the server, not left running
        {ok, [<<"ok.sql">>]} = call(P, {apply_schema, Ok}, #{timeout_ms => 5000}),
        {ok, #{database := #{timeouts := 1, cancels := 1, connects := 1}}} = call(P, info),
        %% a streamed SQL source (db_columns); the first train imports the training code,
        %% so a short one comes first
        {error, _} = call(P, {train, <<"h13db_w">>, #{algorithm => <<"ALS">>,
                                                    data => {sql, <<"SELECT 1">>, []}}}),
        Q = <<"SELECT 1::INT8, 2::INT8, 1.0::FLOAT8 FROM pg_sleep(20)">>,
        Late2 = timed_out(P, {train, <<"h13db_w">>, #{algorithm => <<"ALS">>,
                                                    data => {sql, Q, []}}}, 2000),
        {ok, pong} = call(P, ping),
        0 = active_sleeps(Ctx, App),
        {ok, [<<"ok.sql">>]} = call(P, {apply_schema, Ok}, #{timeout_ms => 5000}),
        %% both statements were cancelled on the connection made first, which serves on
        {ok, #{database := #{timeouts := 2, cancels := 2, connects := 1}}} = call(P, info),
        fmt("timeout ~b ms late (db_execute), ~b ms late (db_columns); 1 connection", [Late1, Late2])
    after
        stop_port(P)
    end.

case_restart(#{ok_dir := Ok, sleep_dir := Sleep} = Ctx) ->
    Pg = own_server(Ctx),
    P = start_port(Ctx, own_url(Pg), []),
    try
        {ok, [<<"ok.sql">>]} = call(P, {apply_schema, Ok}, #{timeout_ms => 10000}),
        %% (a) restarted (fast shutdown) while pg_sleep(20) runs: an error at once
        R1 = send(P, {apply_schema, Sleep}, #{timeout_ms => 15000}),
        timer:sleep(1000),
        T0 = erlang:monotonic_time(millisecond),
        own_server_cmd(Pg, "restart -m fast"),
        {error, {database, #{sqlstate := State}}} = await(P, R1, 15000),
        Ms = erlang:monotonic_time(millisecond) - T0,
        true = Ms < 10000,
        {ok, pong} = call(P, ping),
        {ok, [<<"ok.sql">>]} = retry_call(P, {apply_schema, Ok}, 5),
        %% (b) frozen mid-call (a partition, a stopped VM): timeout at the deadline; then
        %% killed and started again: the next call reconnects
        R2 = send(P, {apply_schema, Sleep}, #{timeout_ms => 3000}),
        T1 = erlang:monotonic_time(millisecond),
        timer:sleep(500),
        Pids = own_server_pids(Pg),
        [os:cmd("kill -STOP " ++ Pid) || Pid <- Pids],
        Reply = await(P, R2, 3000 + 5000),
        Late = erlang:monotonic_time(millisecond) - T1 - 3000,
        {ok, pong} = call(P, ping),
        [os:cmd("kill -KILL " ++ Pid) || Pid <- Pids],
        own_server_gone(Pg, hd(Pids), 50),
        own_server_cmd(Pg, "start"),
        {error, {timeout, _}} = Reply,
        true = Late >= -50 andalso Late < ?LATE_MS,
        {ok, [<<"ok.sql">>]} = retry_call(P, {apply_schema, Ok}, 5),
        fmt("restart: ~s after ~b ms; frozen: timeout ~b ms late", [State, Ms, Late])
    after
        stop_port(P),
        own_server_stop(Pg)
    end.

case_copy_refused(#{suffix := Suffix} = Ctx) ->
    App = "uro_db_waits_e_" ++ Suffix,
    Recs = "h13db_recs_" ++ Suffix,
    {ok, _} = psql(Ctx, ["CREATE TABLE ", Recs, " (model TEXT NOT NULL, user_id TEXT NOT NULL, "
                         "rank INT8 NOT NULL, item_id TEXT NOT NULL, score FLOAT8 NOT NULL, "
                         "model_version INT8 NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT "
                         "now(), PRIMARY KEY (model, user_id, rank))"]),
    %% through a relay, which stalls new connections for the last part
    Proxy = proxy_start(forward, upstream(Ctx)),
    P = start_port(Ctx, proxy_url(Proxy, App), [{"URO_REC_FAULTS", "1"}]),
    try
        Name = list_to_binary("h13db_e_" ++ Suffix),
        {ok, #{n_users := 60}} =
            call(P, {train, Name, #{algorithm => <<"ALS">>,
                                    data => {sql, <<"SELECT (g % 60)::INT8, (g * 7 % 97)::INT8, "
                                                    "1.0::FLOAT8 FROM generate_series(1, 600) g">>, []},
                                    params => #{n_epochs => 2, embed_size => 8, n_threads => 1,
                                                seed => 42}}}, #{timeout_ms => 300000}),
        Opts = #{n => 5, table => list_to_binary(Recs), batch_size => 50, writers => 2},
        %% COPY works until the server refuses it
        {ok, #{rows := 300}} = call(P, {export, Name, Opts}),
        {ok, #{database := #{copy_fallbacks := 0}}} = call(P, info),
        {ok, ok} = call(P, {fault, refuse_copy}),
        {{ok, #{rows := 300, batches := 6}}, Logs1} = call_logs(P, {export, Name, Opts}),
        ["300"] = psql_ok(Ctx, ["SELECT count(*) FROM ", Recs]),
        ["60|5"] = psql_ok(Ctx, ["SELECT count(DISTINCT user_id), max(rank) FROM ", Recs]),
        1 = length([L || {warning, L} <- Logs1, binary:match(L, <<"refused COPY">>) =/= nomatch]),
        {ok, #{database := #{copy_fallbacks := 1}}} = call(P, info),
        %% the next export on the same connection does not ask again: no new log, same count
        {{ok, #{rows := 300}}, Logs2} = call_logs(P, {export, Name, Opts#{writers => 1}}),
        [] = [L || {warning, L} <- Logs2, binary:match(L, <<"refused COPY">>) =/= nomatch],
        {ok, #{database := #{copy_fallbacks := 1}}} = call(P, info),
        {ok, pong} = call(P, ping),
        %% an export whose second writer's new connection stalls after the startup: the
        %% writer thread's wait ends at the call's deadline too
        proxy_mode(Proxy, stall),
        Late = timed_out(P, {export, Name, Opts#{batch_size => 10}}, 2000),
        {ok, pong} = call(P, ping),
        proxy_mode(Proxy, forward),
        {ok, #{rows := 300}} = call(P, {export, Name, Opts}),
        fmt("300 rows in 6 batches by INSERT; one warning; copy_fallbacks 1; "
            "stalled writer: timeout ~b ms late", [Late])
    after
        stop_port(P),
        proxy_stop(Proxy),
        psql(Ctx, ["DROP TABLE IF EXISTS ", Recs])
    end.

%% ---- helpers ------------------------------------------------------------------------------------

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

%% Sends Cmd with timeout_ms Timeout; it must answer `timeout`, not before its deadline and
%% less than LATE_MS after it. Returns how late it was, in ms.
timed_out(P, Cmd, Timeout) ->
    T0 = erlang:monotonic_time(millisecond),
    R = send(P, Cmd, #{timeout_ms => Timeout}),
    Reply = await(P, R, Timeout + 5000),
    Late = erlang:monotonic_time(millisecond) - T0 - Timeout,
    case Reply of
        {error, {timeout, _}} when Late >= -5, Late < ?LATE_MS -> Late;
        _ -> exit({not_timed_out, Reply, late_ms, Late})
    end.

retry_call(P, Cmd, 0) -> call(P, Cmd, #{timeout_ms => 10000});
retry_call(P, Cmd, N) ->
    case call(P, Cmd, #{timeout_ms => 10000}) of
        {ok, _} = R -> R;
        _ -> timer:sleep(500), retry_call(P, Cmd, N - 1)
    end.

upstream(#{server := Server}) ->
    #{host := H} = M = uri_string:parse(Server),
    {H, maps:get(port, M, 5432)}.

url(#{server := Server}, Db, App) ->
    Server ++ "/" ++ Db ++ "?sslmode=disable&gssencmode=disable&application_name=" ++ App.

proxy_url({_, Port, _}, App) ->
    "postgresql://postgres@127.0.0.1:" ++ integer_to_list(Port) ++
        "/test?sslmode=disable&gssencmode=disable&application_name=" ++ App.

active_sleeps(Ctx, App) ->
    timer:sleep(200),
    [N] = psql_ok(Ctx, ["SELECT count(*) FROM pg_stat_activity WHERE application_name = '", App,
                        "' AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"]),
    list_to_integer(N).

%% ---- a TCP proxy with modes: silent (accepts, never answers), stall (relays the startup
%% packet and the server's answers, then never forwards what the client sends), forward ----

proxy_start(Mode, Upstream) ->
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {backlog, 64}]),
    {ok, Port} = inet:port(L),
    ets:insert(proxy, {Port, Mode}),
    Acceptor = spawn(fun() -> accept_loop(L, Port, Upstream) end),
    ok = gen_tcp:controlling_process(L, Acceptor),
    {L, Port, Acceptor}.

proxy_mode({_, Port, _}, Mode) -> ets:insert(proxy, {Port, Mode}).

proxy_stop({L, _, Acceptor}) ->
    Acceptor ! stop,
    catch gen_tcp:close(L),
    ok.

accept_loop(L, Port, Upstream) ->
    accept_loop(L, Port, Upstream, []).

accept_loop(L, Port, Upstream, Handlers) ->
    case gen_tcp:accept(L, 100) of
        {ok, C} ->
            [{Port, Mode}] = ets:lookup(proxy, Port),
            H = spawn(fun() -> receive {go, S} -> handle(Mode, S, Upstream) end end),
            ok = gen_tcp:controlling_process(C, H),
            H ! {go, C},
            accept_loop(L, Port, Upstream, [H | Handlers]);
        {error, timeout} ->
            receive stop -> [exit(H, kill) || H <- Handlers], ok
            after 0 -> accept_loop(L, Port, Upstream, Handlers)
            end;
        {error, _} ->
            [exit(H, kill) || H <- Handlers],
            ok
    end.

handle(silent, C, _) ->
    receive never -> gen_tcp:close(C) end;
handle(stall, C, {Host, Port}) ->
    {ok, U} = gen_tcp:connect(Host, Port, [binary, {active, false}]),
    {ok, <<Len:32>> = Head} = gen_tcp:recv(C, 4),
    {ok, Body} = gen_tcp:recv(C, Len - 4),
    ok = gen_tcp:send(U, [Head, Body]),
    ok = inet:setopts(U, [{active, true}]),
    one_way(U, C);
handle(forward, C, {Host, Port}) ->
    {ok, U} = gen_tcp:connect(Host, Port, [binary, {active, true}]),
    ok = inet:setopts(C, [{active, true}]),
    relay(C, U).

one_way(U, C) ->
    receive
        {tcp, U, D} -> gen_tcp:send(C, D), one_way(U, C);
        {tcp_closed, U} -> gen_tcp:close(C)
    end.

relay(C, U) ->
    receive
        {tcp, C, D} -> gen_tcp:send(U, D), relay(C, U);
        {tcp, U, D} -> gen_tcp:send(C, D), relay(C, U);
        {tcp_closed, _} -> gen_tcp:close(C), gen_tcp:close(U)
    end.

%% ---- a PostgreSQL of our own (D): initdb as postgres, a free port, stopped at the end ----------

own_server(#{tmp := Tmp}) ->
    Dir = filename:join(Tmp, "pg"),
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    gen_tcp:close(L),
    "" = os:cmd("mkdir -p " ++ Dir ++ " && chown postgres " ++ Dir ++ " " ++ Tmp ++ " && chmod 755 " ++ Tmp),
    Out = os:cmd("runuser -u postgres -- " ++ ?PG_BIN ++ "/initdb -D " ++ Dir ++ "/data -A trust "
                 "-U postgres --no-sync >/dev/null 2>&1 && echo done"),
    "done\n" = Out,
    Pg = #{dir => Dir, port => Port},
    own_server_cmd(Pg, "start"),
    Pg.

own_server_cmd(#{dir := Dir, port := Port}, Cmd) ->
    Out = os:cmd("runuser -u postgres -- " ++ ?PG_BIN ++ "/pg_ctl -D " ++ Dir ++ "/data -w -t 60 -l "
                 ++ Dir ++ "/log -o '-p " ++ integer_to_list(Port) ++ " -k " ++ Dir ++
                 " -c listen_addresses=127.0.0.1 -c fsync=off' " ++ Cmd ++ " >/dev/null 2>&1 && echo done"),
    "done\n" = Out.

%% A frozen server does not stop: its processes are killed (they are this test's).
own_server_stop(#{dir := Dir} = Pg) ->
    case catch own_server_pids(Pg) of
        [Pm | _] = Pids ->
            [os:cmd("kill -KILL " ++ Pid) || Pid <- Pids],
            catch own_server_gone(Pg, Pm, 50);
        _ -> ok
    end,
    os:cmd("rm -rf " ++ Dir).

%% Waits until the killed postmaster is gone, then removes its lock file (a start would
%% otherwise take a recycled pid for it).
own_server_gone(#{dir := Dir}, Pm, 0) ->
    exit({postmaster_still_there, Pm, Dir});
own_server_gone(#{dir := Dir} = Pg, Pm, N) ->
    case os:cmd("kill -0 " ++ Pm ++ " 2>/dev/null && echo alive") of
        "alive\n" -> timer:sleep(100), own_server_gone(Pg, Pm, N - 1);
        _ -> file:delete(filename:join([Dir, "data", "postmaster.pid"]))
    end.

%% The postmaster and its children.
own_server_pids(#{dir := Dir}) ->
    {ok, Bin} = file:read_file(filename:join([Dir, "data", "postmaster.pid"])),
    [Pm | _] = string:split(Bin, "\n"),
    Children = string:lexemes(os:cmd("ps -o pid= --ppid " ++ binary_to_list(Pm)), " \n"),
    [binary_to_list(Pm) | Children].

own_url(#{port := Port}) ->
    "postgresql://postgres@127.0.0.1:" ++ integer_to_list(Port) ++
        "/postgres?sslmode=disable&gssencmode=disable".

%% ---- psql, the port ---------------------------------------------------------------------------

psql(#{server := Server}, Sql) ->
    #{host := H} = M = uri_string:parse(Server),
    Exe = os:find_executable("psql"),
    P = open_port({spawn_executable, Exe},
                  [binary, exit_status, stderr_to_stdout, hide,
                   {args, ["-X", "-q", "-h", H, "-p", integer_to_list(maps:get(port, M, 5432)),
                           "-U", "postgres", "-d", "test", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1",
                           "-c", lists:flatten(io_lib:format("~ts", [Sql]))]}]),
    collect(P, []).

psql_ok(Ctx, Sql) ->
    {ok, Lines} = psql(Ctx, Sql),
    Lines.

collect(P, Acc) ->
    receive
        {P, {data, D}} -> collect(P, [D | Acc]);
        {P, {exit_status, S}} ->
            Out = binary_to_list(iolist_to_binary(lists:reverse(Acc))),
            Lines = [L || L <- string:split(Out, "\n", all), L =/= ""],
            case S of 0 -> {ok, Lines}; _ -> {error, Out} end
    after 60000 -> {error, timeout}
    end.

start_port(#{exe := Exe, tmp := Tmp}, Url, Env) ->
    Dir = filename:join([Tmp, "models"]),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Port = open_port({spawn_executable, Exe},
                     [binary, {packet, 4}, exit_status, {env, Env},
                      {args, ["--model-dir", Dir, "--database-url", Url]}]),
    P = #{port => Port},
    {ok, pong} = call(P, ping),
    P.

stop_port(#{port := Port}) ->
    catch port_close(Port),
    ok.

send(#{port := Port}, Cmd, Opts) ->
    Ref = make_ref(),
    true = port_command(Port, term_to_binary({call, Ref, Cmd, Opts})),
    Ref.

call(P, Cmd) -> call(P, Cmd, #{timeout_ms => 60000}).
call(P, Cmd, Opts) -> await(P, send(P, Cmd, Opts), maps:get(timeout_ms, Opts) + 5000).

call_logs(P, Cmd) ->
    R = send(P, Cmd, #{timeout_ms => 60000}),
    await_logs(P, R, 65000, []).

await(P, Ref, Wait) ->
    {Reply, _} = await_logs(P, Ref, Wait, []),
    Reply.

await_logs(#{port := Port} = P, Ref, Wait, Logs) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, Reply} -> {Reply, lists:reverse(Logs)};
                {log, Level, Msg} -> await_logs(P, Ref, Wait, [{Level, Msg} | Logs]);
                _ -> await_logs(P, Ref, Wait, Logs)
            end;
        {Port, {exit_status, S}} -> exit({port_exited, S})
    after Wait -> exit({no_reply_within_ms, Wait})
    end.
