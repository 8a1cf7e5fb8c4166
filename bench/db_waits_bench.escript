#!/usr/bin/env escript
%% -*- erlang -*-
%%
%% What the bounded database waits (c_src/db_wait.c: nonblocking libpq, poll(2) with the GIL
%% released) cost against a baseline port built without them, call by call interleaved in
%% the same run:
%%
%%   stream  1,000,000 rows x 3 columns (INT8 ids) streamed into columns (db_columns), the
%%           source refused after the last row (a NULL label) so that no training runs
%%   text    the same with TEXT user ids (an interned str per row)
%%   small   one `SELECT 1` through apply_schema (db_execute): a round trip with Python
%%
%%   escript bench/db_waits_bench.escript NEW_PORT_EXE BASELINE_PORT_EXE [REPS]
%%
%% Prints the median of each and the ratio new/baseline. URO_REC_TEST_PG as in the tests.
-mode(compile).

main([New, Base | Rest]) ->
    Reps = case Rest of [R] -> list_to_integer(R); [] -> 7 end,
    Server = case os:getenv("URO_REC_TEST_PG") of
                 false -> "postgresql://postgres@127.0.0.1:5432";
                 S -> S
             end,
    Url = Server ++ "/test?sslmode=disable",
    Tmp = "/tmp/uro_db_waits_bench_" ++ os:getpid(),
    ok = filelib:ensure_dir(filename:join([Tmp, "ok", "x"])),
    ok = file:write_file(filename:join([Tmp, "ok", "ok.sql"]), "SELECT 1"),
    Ports = [{new, start(New, Url, Tmp)}, {base, start(Base, Url, Tmp)}],
    Stream = <<"SELECT g::INT8, (g % 1000)::INT8, CASE WHEN g = 1000000 THEN NULL ELSE 1.0 END::FLOAT8 "
               "FROM generate_series(1, 1000000) g">>,
    Text = <<"SELECT 'user-' || g, (g % 1000)::INT8, CASE WHEN g = 1000000 THEN NULL ELSE 1.0 END::FLOAT8 "
             "FROM generate_series(1, 1000000) g">>,
    Train = fun(Q) -> {train, <<"b">>, #{algorithm => <<"ALS">>, data => {sql, Q, []}}} end,
    Small = {apply_schema, list_to_binary(filename:join(Tmp, "ok"))},
    %% warm up: imports, connections
    [{error, {badarg, _}} = call(P, Train(Stream)) || {_, P} <- Ports],
    [{ok, _} = call(P, Small) || {_, P} <- Ports],
    Cases = [{stream, Train(Stream), 1}, {text, Train(Text), 1}, {small, Small, 200}],
    io:format("~-8s ~12s ~12s ~8s   (median of ~b, interleaved; load ~s)~n",
              [case_, "new ms", "baseline ms", "ratio", Reps, load()]),
    [begin
         Times = [[{Who, timed(P, Cmd, N)} || {Who, P} <- order(I, Ports)] || I <- lists:seq(1, Reps)],
         NewT = median([T || Rep <- Times, {new, T} <- Rep]),
         BaseT = median([T || Rep <- Times, {base, T} <- Rep]),
         io:format("~-8s ~12.3f ~12.3f ~8.3f~n", [Name, NewT, BaseT, NewT / BaseT])
     end || {Name, Cmd, N} <- Cases],
    io:format("load after: ~s~n", [load()]),
    os:cmd("rm -rf " ++ Tmp),
    halt(0);
main(_) ->
    io:format("usage: escript bench/db_waits_bench.escript NEW_PORT BASELINE_PORT [REPS]~n"),
    halt(2).

order(I, Ports) when I rem 2 =:= 0 -> lists:reverse(Ports);
order(_, Ports) -> Ports.

%% Mean ms per call over N calls.
timed(P, Cmd, N) ->
    T0 = erlang:monotonic_time(microsecond),
    [call(P, Cmd) || _ <- lists:seq(1, N)],
    (erlang:monotonic_time(microsecond) - T0) / 1000 / N.

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).

load() ->
    {ok, B} = file:read_file("/proc/loadavg"),
    lists:join(" ", lists:sublist(string:lexemes(binary_to_list(B), " "), 3)).

start(Exe, Url, Tmp) ->
    Port = open_port({spawn_executable, Exe},
                     [binary, {packet, 4}, exit_status,
                      {args, ["--model-dir", filename:join(Tmp, "models"), "--database-url", Url]}]),
    {ok, pong} = call(Port, ping),
    Port.

call(Port, Cmd) ->
    Ref = make_ref(),
    true = port_command(Port, term_to_binary({call, Ref, Cmd, #{timeout_ms => 120000}})),
    await(Port, Ref).

await(Port, Ref) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, R} -> R;
                _ -> await(Port, Ref)
            end;
        {Port, {exit_status, S}} -> exit({port_exited, S})
    after 180000 -> exit(no_reply)
    end.
