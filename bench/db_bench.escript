#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% Database throughput of the port against PostgreSQL (bench/DB_BENCH.md has method and
%% results):
%%
%%   1. reading: a 1,000,000-row table (user INT8, item INT8, label FLOAT8) streamed by the
%%      port, against pandas.read_sql on the same query in a fresh Python (psycopg 3
%%      connection, and a SQLAlchemy engine), repetitions interleaved; peak memory of each.
%%      A second table with TEXT users and UUID items, the same way.
%%   2. export: ALS trained on 20,000 users, {export, ...} n = 10 for every user (200,000
%%      rows) at several batch sizes, with one writer connection and with two (the default).
%%
%%   escript bench/db_bench.escript PORT_EXE [VENV_PYTHON]
%%
%% URO_REC_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test) is the database; its
%% tables get a random suffix and are dropped at the end. URO_REC_BENCH_REPS (default 3).
-mode(compile).

-define(TIMEOUT, 900000).
-define(ROWS, 1000000).
-define(EXPORT_USERS, 20000).

main([Exe | Rest]) ->
    Here = filename:dirname(filename:absname(escript:script_name())),
    Python = case Rest of
                 [Py | _] -> Py;
                 [] -> string:trim(os:cmd("bash " ++ filename:join([Here, "..", "scripts", "setup.sh"])
                                          ++ " --path")) ++ "/bin/python"
             end,
    Url = case os:getenv("URO_REC_BENCH_PG") of
              false -> "postgresql://postgres@127.0.0.1:5432/test";
              U -> U
          end,
    Reps = list_to_integer(os:getenv("URO_REC_BENCH_REPS", "3")),
    Sfx = integer_to_list(erlang:unique_integer([positive]) rem 100000) ++ "_" ++ os:getpid(),
    Ctx = #{url => Url, python => Python, script => filename:join(Here, "db_bench.py")},
    Int = "uro_bench_int_" ++ Sfx, Str = "uro_bench_str_" ++ Sfx,
    ExpIn = "uro_bench_expin_" ++ Sfx, Recs = "uro_bench_recs_" ++ Sfx,
    Tmp = filename:join("/tmp", "uro_db_bench_" ++ Sfx),
    io:format("db_bench: ~s, ~b repetitions, ~s~n", [Url, Reps, os:cmd("nproc") -- "\n"]),
    Pass = try
               run(Ctx, Exe, Tmp, Int, Str, ExpIn, Recs, Reps)
           after
               [psql(Ctx, ["DROP TABLE IF EXISTS ", T]) || T <- [Int, Str, ExpIn, Recs]],
               os:cmd("rm -rf " ++ Tmp)
           end,
    halt(if Pass -> 0; true -> 1 end);
main(_) ->
    io:format("usage: escript bench/db_bench.escript PORT_EXE [VENV_PYTHON]~n"),
    halt(2).

run(Ctx, Exe, Tmp, Int, Str, ExpIn, Recs, Reps) ->
    Rows = integer_to_list(?ROWS),
    {T1, _} = timer:tc(fun() ->
        {ok, _} = psql(Ctx, [
            "CREATE TABLE ", Int, " AS SELECT (g * 7919) % 50000 AS user_id, (g * 104729 + g / 50000) % 20000 "
            "AS item_id, 1.0::FLOAT8 AS label FROM generate_series(1::INT8, ", Rows, "::INT8) g;",
            "CREATE TABLE ", Str, " AS SELECT 'user-' || ((g * 7919) % 50000) AS user_id, "
            "md5(((g * 104729 + g / 50000) % 20000)::TEXT)::UUID AS item_id, 1.0::FLOAT8 AS label "
            "FROM generate_series(1::INT8, ", Rows, "::INT8) g;",
            %% 20,000 users x ~15 items of 5,000, a little popularity skew
            "CREATE TABLE ", ExpIn, " AS SELECT u AS user_id, ((u * 31 + k * k * 7) % 5000) AS item_id, "
            "1.0::FLOAT8 AS label FROM generate_series(1::INT8, ", integer_to_list(?EXPORT_USERS),
            "::INT8) u, generate_series(1::INT8, 15::INT8) k;",
            "CREATE TABLE ", Recs, " (model TEXT NOT NULL, user_id TEXT NOT NULL, rank INT8 NOT NULL, "
            "item_id TEXT NOT NULL, score FLOAT8 NOT NULL, model_version INT8 NOT NULL, "
            "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (model, user_id, rank));",
            "ANALYZE ", Int, "; ANALYZE ", Str, "; ANALYZE ", ExpIn, ";"])
    end),
    io:format("tables created in ~.1f s~n", [T1 / 1.0e6]),
    P = start_port(Ctx, Exe, Tmp),
    %% warm-up: LibRecommender's import, the connection
    {ok, _} = call(P, {train, <<"warm">>, als(<<"SELECT (g % 50)::INT8, (g % 31)::INT8, 1.0::FLOAT8 "
                                                 "FROM generate_series(1, 3000) g">>, #{})}),
    {ok, #{pid := Pid}} = call(P, info),
    Hwm0 = vm_hwm(Pid),

    %% ---- 1. reading -------------------------------------------------------------------------
    QInt = bin(["SELECT user_id, item_id, label FROM ", Int]),
    QStr = bin(["SELECT user_id, item_id, label FROM ", Str]),
    io:format("~nreading ~b rows (INT8, INT8, FLOAT8): ~s~n", [?ROWS, QInt]),
    IntRuns = [begin
                   S = port_stream(P, QInt),
                   Pg = pandas(Ctx, QInt, "psycopg"),
                   Sa = pandas(Ctx, QInt, "sqlalchemy"),
                   io:format("  rep ~b: port ~.3f s, pandas+psycopg ~.3f s, pandas+SQLAlchemy ~.3f s~n",
                             [K, S, maps:get(seconds, Pg), maps:get(seconds, Sa)]),
                   {S, Pg, Sa}
               end || K <- lists:seq(1, Reps)],
    Hwm1 = vm_hwm(Pid),
    io:format("~nreading ~b rows (TEXT, UUID, FLOAT8): ~s~n", [?ROWS, QStr]),
    StrRuns = [begin
                   S = port_stream(P, QStr),
                   Pg = pandas(Ctx, QStr, "psycopg"),
                   io:format("  rep ~b: port ~.3f s, pandas+psycopg ~.3f s~n", [K, S, maps:get(seconds, Pg)]),
                   {S, Pg}
               end || K <- lists:seq(1, Reps)],
    Hwm2 = vm_hwm(Pid),
    %% the whole train on the INT8 rows, for scale: round trip vs the reply's seconds
    {FullRt, #{seconds := Fit}} = timed(P, {train, <<"big">>, als(QInt, #{save => false})}),
    io:format("~ntrain ALS 1 epoch on the INT8 rows: round trip ~.2f s, of which build_trainset + fit ~.2f s "
              "(so reading + frame + serving tables ~.2f s)~n", [FullRt, Fit, FullRt - Fit]),
    Hwm3 = vm_hwm(Pid),

    %% ---- 2. export --------------------------------------------------------------------------
    io:format("~nexport: ALS on ~b users, n = 10 for every user~n", [?EXPORT_USERS]),
    {ok, #{n_users := NU, seconds := ExpFit}} =
        call(P, {train, <<"exp">>, als(bin(["SELECT user_id, item_id, label FROM ", ExpIn]),
                                       #{save => false})}),
    io:format("  trained: ~b users in ~.2f s~n", [NU, ExpFit]),
    %% the first export writes into an empty table; the others replace every list (DELETE
    %% 200,000 rows, INSERT 200,000), each after a VACUUM so that they all start from the
    %% same state (without it each run leaves 200,000 dead rows and the next is slower)
    %% writers: 2 is the default (two connections); 1 is the single connection of before,
    %% interleaved with it so that both see the same machine
    Batches = [{5000, 2, "empty table"} | lists:append(lists:duplicate(3, [{5000, 1, "replace"},
                                                                          {5000, 2, "replace"}]))]
              ++ [{1000, 2, "replace"}, {20000, 2, "replace"}],
    Exports = [begin
                   {ok, _} = psql(Ctx, ["VACUUM ANALYZE ", Recs]),
                   {Rt, {ok, #{rows := R, batches := B, retries := Rr, seconds := S}}} =
                       timed_raw(P, {export, <<"exp">>, #{users => all, n => 10, table => bin(Recs),
                                                          batch_size => Bs, writers => W}}),
                   io:format("  batch_size ~6b, writers ~b, ~-11s: ~b rows in ~b transactions, ~.2f s "
                             "(round trip ~.2f s), ~b rows/s, ~b retries~n",
                             [Bs, W, What, R, B, S, Rt, round(R / S), Rr]),
                   {{Bs, W, What}, R, S}
               end || {Bs, W, What} <- Batches],
    {ok, [Count]} = psql(Ctx, ["SELECT count(*) FROM ", Recs, " WHERE model = 'exp'"]),
    true = list_to_integer(Count) =:= NU * 10,
    %% recommend alone, for the share of the export that is not the database
    Users = lists:seq(1, ?EXPORT_USERS),
    {RecT, {ok, _}} = timer:tc(fun() -> call(P, {recommend_many, <<"exp">>, Users, 10, #{scores => true}}) end),
    io:format("  recommend_many for the same users alone: ~.2f s~n", [RecT / 1.0e6]),
    stop_port(P),
    %% the database side alone: method => insert's statements from psycopg, then a plain INSERT ... SELECT
    {ok, _} = psql(Ctx, ["VACUUM ANALYZE ", Recs]),
    Pe = py_json(Ctx, ["--export-table", Recs, "--users", integer_to_list(?EXPORT_USERS), "--n", "10",
                       "--batch-size", "5000"]),
    io:format("  method => insert's statements from psycopg, random lists, batch_size 5000: ~.2f s (~.2f s in "
              "the database, ~.2f s building array literals)~n",
              [maps:get(seconds, Pe), maps:get(sql_seconds, Pe), maps:get(literal_seconds, Pe)]),
    {ok, _} = psql(Ctx, ["VACUUM ANALYZE ", Recs]),
    {CeilT, {ok, _}} = timer:tc(fun() ->
        psql(Ctx, ["INSERT INTO ", Recs, " (model, user_id, rank, item_id, score, model_version) "
                   "SELECT 'ceiling', (g / 10)::TEXT, g % 10, (g * 7 % 5000)::TEXT, 0.5, 1 "
                   "FROM generate_series(0, ", integer_to_list(?EXPORT_USERS * 10 - 1), ") g"]) end),
    {ok, _} = psql(Ctx, ["DELETE FROM ", Recs, " WHERE model = 'ceiling'"]),
    io:format("  one INSERT ... SELECT FROM generate_series of ~b rows into the same table: ~.2f s~n",
              [?EXPORT_USERS * 10, CeilT / 1.0e6]),
    Iv = py_json(Ctx, ["--insert-variants", "--users", integer_to_list(?EXPORT_USERS), "--n", "10"]),
    io:format("  one statement, 200,000 rows, fresh table: unnest + ON CONFLICT ~.2f s, unnest without "
              "ON CONFLICT ~.2f s, generate_series ~.2f s; DELETE of them all by user ~.2f s~n",
              [maps:get(unnest_on_conflict, Iv), maps:get(unnest_plain, Iv),
               maps:get(generate_series, Iv), maps:get(delete, Iv)]),

    %% ---- summary ----------------------------------------------------------------------------
    PortS = median([S || {S, _, _} <- IntRuns]),
    PgS = median([maps:get(seconds, Pg) || {_, Pg, _} <- IntRuns]),
    SaS = median([maps:get(seconds, Sa) || {_, _, Sa} <- IntRuns]),
    PgMem = lists:max([maps:get(maxrss_kib, Pg) - maps:get(maxrss_before_kib, Pg) || {_, Pg, _} <- IntRuns]),
    SaMem = lists:max([maps:get(maxrss_kib, Sa) - maps:get(maxrss_before_kib, Sa) || {_, _, Sa} <- IntRuns]),
    PgPeak = lists:max([maps:get(maxrss_kib, Pg) || {_, Pg, _} <- IntRuns]),
    StrPort = median([S || {S, _} <- StrRuns]),
    StrPg = median([maps:get(seconds, Pg) || {_, Pg} <- StrRuns]),
    StrPgMem = lists:max([maps:get(maxrss_kib, Pg) - maps:get(maxrss_before_kib, Pg) || {_, Pg} <- StrRuns]),
    Ratio = PgS / PortS,
    ExpRates = [{K, R / S} || {K, R, S} <- Exports],
    DefaultRate = median([Rate || {{5000, 2, "replace"}, Rate} <- ExpRates]),
    OneWriter = median([Rate || {{5000, 1, "replace"}, Rate} <- ExpRates]),
    io:format("~n== summary (medians of ~b)~n", [Reps]),
    io:format("  ~-52s ~12s ~14s  ~s~n", ["", "rows/s", "peak memory", "target"]),
    line("read INT8: port (stream, round trip)", ?ROWS / PortS,
         io_lib:format("+~b MiB", [(Hwm1 - Hwm0) div 1024]), ""),
    line("read INT8: pandas.read_sql, psycopg connection", ?ROWS / PgS,
         io_lib:format("+~b MiB", [PgMem div 1024]), ""),
    line("read INT8: pandas.read_sql, SQLAlchemy engine", ?ROWS / SaS,
         io_lib:format("+~b MiB", [SaMem div 1024]), ""),
    io:format("  ~-52s ~11.1fx ~14s  >= 3x ~s~n", ["read INT8: port / pandas(psycopg)", Ratio, "",
                                                   verdict(Ratio >= 3)]),
    io:format("  ~-52s ~11.1fx~n", ["read INT8: port / pandas(SQLAlchemy)", SaS / PortS]),
    line("read TEXT+UUID: port", ?ROWS / StrPort,
         io_lib:format("+~b MiB", [(Hwm2 - Hwm0) div 1024]), "(VmHWM after both reads - warm-up)"),
    line("read TEXT+UUID: pandas.read_sql, psycopg", ?ROWS / StrPg,
         io_lib:format("+~b MiB", [StrPgMem div 1024]), io_lib:format("port ~.1fx", [StrPg / StrPort])),
    [line(io_lib:format("export n=10, batch_size ~b, writers ~b, ~s", [Bs, W, What]), Rate, "",
          case {Bs, W, What} of
              {5000, 2, "replace"} -> io_lib:format(">= 100000 ~s (the default)", [verdict(Rate >= 100000)]);
              _ -> ""
          end)
     || {{Bs, W, What}, Rate} <- lists:ukeysort(1, [{K, median([R || {K1, R} <- ExpRates, K1 =:= K])}
                                                    || {K, _} <- ExpRates])],
    io:format("  ~-52s ~11.2fx~n", ["export: two writers / one writer", DefaultRate / OneWriter]),
    line("method => insert's statements from psycopg, 5000", ?EXPORT_USERS * 10 / maps:get(seconds, Pe),
         "", "(database + literals only)"),
    line("one INSERT ... SELECT generate_series (ceiling)", ?EXPORT_USERS * 10 / (CeilT / 1.0e6), "",
         "(the server's own insert rate)"),
    line("one INSERT ... unnest ... ON CONFLICT (as exported)", ?EXPORT_USERS * 10 / maps:get(unnest_on_conflict, Iv),
         "", "(fresh table, one statement)"),
    line("one INSERT ... unnest, no ON CONFLICT", ?EXPORT_USERS * 10 / maps:get(unnest_plain, Iv),
         "", "(fresh table, one statement)"),
    io:format("~n  port VmHWM: ~b MiB after warm-up (LibRecommender imported), ~b MiB after the "
              "INT8 reads, ~b MiB after the TEXT+UUID reads, ~b MiB after training on the INT8 rows~n",
              [Hwm0 div 1024, Hwm1 div 1024, Hwm2 div 1024, Hwm3 div 1024]),
    io:format("  pandas ru_maxrss: ~b MiB after imports and connecting, ~b MiB at peak~n",
              [maps:get(maxrss_before_kib, element(2, hd(IntRuns))) div 1024, PgPeak div 1024]),
    Pass = Ratio >= 3 andalso DefaultRate >= 100000,
    io:format("~n~s: read ratio ~.1fx (>= 3x), export ~b rows/s at the default batch size, "
              "replacing (>= 100000)~n", [verdict(Pass), Ratio, round(DefaultRate)]),
    Pass.

line(Label, Rate, Mem, Target) ->
    io:format("  ~-52ts ~12b ~14ts  ~ts~n", [Label, round(Rate), Mem, Target]).

verdict(true) -> "PASS";
verdict(false) -> "FAIL".

median(L) ->
    S = lists:sort(L),
    N = length(S),
    case N rem 2 of
        1 -> lists:nth((N + 1) div 2, S);
        0 -> (lists:nth(N div 2, S) + lists:nth(N div 2 + 1, S)) / 2
    end.

als(Query, Extra) ->
    maps:merge(#{algorithm => <<"ALS">>, data => {sql, Query, []},
                 params => #{n_epochs => 1, embed_size => 16, n_threads => 2, seed => 42}}, Extra).

%% The port reading Query, timed from request to reply: the query gets one more row with a
%% NULL label at the end (UNION ALL), so train streams every row into its columns, finds the
%% NULL in the check that follows, and answers badarg without building or training anything.
port_stream(P, Query) ->
    Q = <<Query/binary, " UNION ALL SELECT NULL, NULL, NULL::FLOAT8">>,
    {Rt, {error, {badarg, Msg}}} = timed_raw(P, {train, <<"stream">>, als(Q, #{save => false})}),
    Expect = iolist_to_binary(["first at row ", integer_to_list(?ROWS + 1)]),
    case binary:match(Msg, Expect) of
        nomatch -> exit({unexpected, Msg});
        _ -> Rt
    end.

pandas(Ctx, Query, Method) ->
    py_json(Ctx, ["--query", binary_to_list(Query), "--method", Method]).

py_json(#{python := Py, script := Script, url := Url}, Args) ->
    Port = open_port({spawn_executable, Py},
                     [binary, exit_status, {line, 65536}, {args, [Script, "--url", Url | Args]}]),
    Out = collect_lines(Port, []),
    Json = lists:last([L || L <- Out, binary:first(L) =:= ${]),
    parse_json(Json).

%% A flat JSON object of numbers and strings (what db_bench.py prints).
parse_json(Bin) ->
    Inner = string:trim(binary_to_list(Bin), both, "{}\n"),
    {match, Pairs} = re:run(Inner, "\"([a-z_]+)\": (\"[^\"]*\"|\\[[^\\]]*\\]|[-0-9.eE+]+)",
                            [global, {capture, all_but_first, list}]),
    maps:from_list([{list_to_atom(K), num(V)} || [K, V] <- Pairs]).

num([$" | _] = S) -> S;
num([$[ | _] = S) -> S;
num(S) ->
    try list_to_integer(S) catch error:badarg -> list_to_float(S) end.

collect_lines(Port, Acc) ->
    receive
        {Port, {data, {eol, L}}} -> collect_lines(Port, [L | Acc]);
        {Port, {data, {noeol, L}}} -> collect_lines(Port, [L | Acc]);
        {Port, {exit_status, 0}} -> lists:reverse(Acc);
        {Port, {exit_status, S}} -> exit({python_failed, S, lists:reverse(Acc)})
    after ?TIMEOUT -> exit(python_timeout)
    end.

vm_hwm(Pid) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/status"),
    {match, [Kb]} = re:run(Status, "VmHWM:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb).

%% ---- psql and the port ------------------------------------------------------------------------

psql(#{url := Url}, Sql) ->
    P = open_port({spawn_executable, os:find_executable("psql")},
                  [binary, exit_status, stderr_to_stdout,
                   {args, ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", Url,
                           "-c", binary_to_list(iolist_to_binary(Sql))]}]),
    psql_collect(P, []).

psql_collect(P, Acc) ->
    receive
        {P, {data, D}} -> psql_collect(P, [D | Acc]);
        {P, {exit_status, S}} ->
            Out = binary_to_list(iolist_to_binary(lists:reverse(Acc))),
            Lines = [L || L <- string:split(Out, "\n", all), L =/= ""],
            if S =:= 0 -> {ok, Lines}; true -> {error, Out} end
    after ?TIMEOUT -> {error, timeout}
    end.

start_port(#{url := Url}, Exe, Tmp) ->
    Dir = filename:join(Tmp, "models"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Port = open_port({spawn_executable, filename:absname(Exe)},
                     [binary, {packet, 4}, exit_status,
                      {args, ["--model-dir", Dir, "--database-url", Url]}]),
    {ok, pong} = call(Port, ping),
    Port.

stop_port(Port) ->
    catch port_close(Port),
    ok.

timed(P, Cmd) ->
    {Rt, {ok, V}} = timed_raw(P, Cmd),
    {Rt, V}.

timed_raw(P, Cmd) ->
    T0 = erlang:monotonic_time(microsecond),
    R = call(P, Cmd),
    {(erlang:monotonic_time(microsecond) - T0) / 1.0e6, R}.

call(Port, Cmd) ->
    Ref = make_ref(),
    true = port_command(Port, term_to_binary({call, Ref, Cmd})),
    await(Port, Ref).

await(Port, Ref) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, Reply} -> Reply;
                _ -> await(Port, Ref)
            end;
        {Port, {exit_status, S}} -> exit({port_exited, S})
    after ?TIMEOUT -> exit(no_reply)
    end.

bin(X) -> iolist_to_binary(X).
