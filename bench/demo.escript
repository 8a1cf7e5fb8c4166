#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% The demo (make demo): generated interactions -> loaded into the database -> ALS trained
%% from SQL through the port -> users' recommendations next to what they consumed, a hold-out
%% hit rate against a popularity baseline, the recommendations exported into the database and
%% a sample read back, then the latency of 1000 recommend calls.
%%
%%   escript bench/demo.escript PORT_EXE [VENV_PYTHON]
%%
%% With DATABASE_URL set (scripts/demo.sh sets it, to a throwaway local cluster if need be)
%% the data goes through the database; without it, through a CSV file.
%%
%% The data comes from `VENV_PYTHON -m uro_rec.datagen` (python/ beside priv/) when it can run,
%% else from the same kind of generator written here in Erlang.
-mode(compile).

-define(USERS, 3000).
-define(ITEMS, 2000).
-define(INTERACTIONS, 60000).
-define(TIMEOUT, 600000).

main([Exe | Rest]) ->
    Python = case Rest of [Py | _] -> Py; [] -> "" end,
    T0 = erlang:monotonic_time(millisecond),
    Tmp = filename:join("/tmp", "uro_demo_" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join([Tmp, "models", "x"])),
    Rows = generate(Exe, Python, Tmp),
    {Train, Held} = split(Rows),
    TrainCsv = filename:join(Tmp, "train.csv"),
    write_csv(TrainCsv, Train),
    io:format("data: ~b interactions, ~b users, ~b items; hold-out: the last interaction of "
              "~b users with >= 5~n",
              [length(Rows), length(lists:usort([U || {U, _, _, _} <- Rows])),
               length(lists:usort([I || {_, I, _, _} <- Rows])), map_size(Held)]),

    Db = os:getenv("DATABASE_URL", ""),
    Port = open_port({spawn_executable, filename:absname(Exe)},
                     [binary, {packet, 4}, exit_status,
                      {args, ["--model-dir", filename:join(Tmp, "models")]
                             ++ [A || Db =/= "", A <- ["--database-url", Db]]}]),
    {ok, pong} = call(Port, ping),
    Data = case Db of
               "" ->
                   io:format("~n(no DATABASE_URL: training from the CSV file)~n"),
                   {csv, list_to_binary(TrainCsv)};
               _ ->
                   load_into_database(Port, Db, TrainCsv, length(Train))
           end,
    io:format("~ntraining ALS on ~p (~b rows) ...~n", [element(1, Data), length(Train)]),
    Spec = #{algorithm => <<"ALS">>, data => Data,
             params => #{embed_size => 32, n_epochs => 10, reg => 1.0, alpha => 10,
                         n_threads => 2, seed => 42},
             eval => #{test_size => 0.1, metrics => [precision, recall, ndcg], k => 10}},
    T1 = erlang:monotonic_time(millisecond),
    case call(Port, {train, <<"demo_als">>, Spec}) of
        {ok, Info} ->
            io:format("trained in ~.2f s (fit ~.2f s): ~b users x ~b items, ~b interactions, "
                      "version ~p~nlibreco's own eval on a random 10% split: ~ts~n",
                      [(erlang:monotonic_time(millisecond) - T1) / 1000,
                       maps:get(seconds, Info), maps:get(n_users, Info),
                       maps:get(n_items, Info), maps:get(n_interactions, Info),
                       maps:get(version, Info), fmt_metrics(maps:get(metrics, Info))]);
        Err ->
            io:format("train failed: ~tp~n", [Err]),
            halt(1)
    end,

    %% a few users: what they consumed, what they are recommended
    ByUser = group(Train),
    Popular = popular(Train),
    Sample = lists:sublist(lists:sort(maps:keys(Held)), 5),
    io:format("~n== five users: consumed (latest first) and recommended; * = the held-out item~n"),
    lists:foreach(fun(U) -> show_user(Port, U, ByUser, Held) end, Sample),

    %% hold-out hit rate @10 against a most-popular baseline
    HeldUsers = maps:keys(Held),
    {ok, Recs} = call(Port, {recommend_many, <<"demo_als">>, HeldUsers, 10, #{}}),
    Hits = length([U || U <- HeldUsers, lists:member(maps:get(U, Held), maps:get(U, Recs))]),
    PopHits = length([U || U <- HeldUsers,
                           lists:member(maps:get(U, Held),
                                        top_unconsumed(Popular, maps:get(U, ByUser, []), 10))]),
    AllRec = lists:append(maps:values(Recs)),
    Top100 = sets:from_list(lists:sublist(Popular, 100)),
    InTop = length([I || I <- AllRec, sets:is_element(I, Top100)]),
    io:format("~n== overlap over ~b held-out users~n", [length(HeldUsers)]),
    io:format("  ALS hit rate@10 (held-out item in the 10):  ~5.1f %  (~b users)~n",
              [100 * Hits / max(1, length(HeldUsers)), Hits]),
    io:format("  most-popular baseline hit rate@10:           ~5.1f %  (~b users)~n",
              [100 * PopHits / max(1, length(HeldUsers)), PopHits]),
    io:format("  distinct items recommended:                  ~b of ~b~n",
              [length(lists:usort(AllRec)), length(Popular)]),
    io:format("  recommendations among the 100 most popular:  ~5.1f %~n",
              [100 * InTop / max(1, length(AllRec))]),

    Db =/= "" andalso export_and_read_back(Port, Db, Sample),

    %% latency of 1000 recommend calls (random known users, N = 10), after 100 warm-up calls
    Users = lists:usort([U || {U, _, _, _} <- Train]),
    UT = list_to_tuple(Users),
    rand:seed(exsss, {1, 2, 3}),
    Pick = fun() -> element(rand:uniform(tuple_size(UT)), UT) end,
    [{ok, _} = call(Port, {recommend, <<"demo_als">>, Pick(), 10, #{}}) || _ <- lists:seq(1, 100)],
    Lat = [begin
               U = Pick(),
               S = erlang:monotonic_time(nanosecond),
               {ok, L} = call(Port, {recommend, <<"demo_als">>, U, 10, #{}}),
               E = erlang:monotonic_time(nanosecond),
               10 = length(L),
               (E - S) / 1000
           end || _ <- lists:seq(1, 1000)],
    Sorted = lists:sort(Lat),
    io:format("~n== 1000 recommend calls (N = 10, ~b items), round trip in microseconds~n",
              [length(Popular)]),
    io:format("  p50 ~.1f   p90 ~.1f   p99 ~.1f   p999 ~.1f   max ~.1f   (mean ~.1f)~n",
              [pct(Sorted, 50), pct(Sorted, 90), pct(Sorted, 99), pct(Sorted, 99.9),
               lists:last(Sorted), lists:sum(Sorted) / length(Sorted)]),
    catch port_close(Port),
    os:cmd("rm -rf '" ++ Tmp ++ "'"),
    io:format("~ndemo done in ~.1f s~n", [(erlang:monotonic_time(millisecond) - T0) / 1000]),
    halt(0);
main(_) ->
    io:format("usage: demo.escript PORT_EXE [VENV_PYTHON]~n"),
    halt(2).

%% The generated interactions go into a table with psql's \copy; the port then trains from
%% a query on it.
load_into_database(Port, Db, Csv, N) ->
    {ok, Files} = call(Port, apply_schema),
    io:format("~ndatabase: ~s applied~n", [join([binary_to_list(F) || F <- Files])]),
    psql(Db, "DROP TABLE IF EXISTS uro_rec_demo_interactions"),
    psql(Db, "CREATE TABLE uro_rec_demo_interactions (user_id INT8 NOT NULL, "
             "item_id INT8 NOT NULL, label FLOAT8 NOT NULL, t FLOAT8 NOT NULL)"),
    psql(Db, "\\copy uro_rec_demo_interactions FROM '" ++ Csv ++ "' CSV HEADER"),
    Count = string:trim(psql(Db, "SELECT count(*) FROM uro_rec_demo_interactions")),
    io:format("database: ~s of ~b interactions loaded into uro_rec_demo_interactions~n",
              [Count, N]),
    {sql, <<"SELECT user_id, item_id, label, t FROM uro_rec_demo_interactions">>, []}.

export_and_read_back(Port, Db, Sample) ->
    {ok, E} = call(Port, {export, <<"demo_als">>, #{n => 10, batch_size => 5000}}),
    io:format("~n== export: ~b rows in ~b batches, ~b retries, ~.2f s (~b rows/s)~n",
              [maps:get(rows, E), maps:get(batches, E), maps:get(retries, E),
               maps:get(seconds, E), round(maps:get(rows, E) / max(1.0e-6, maps:get(seconds, E)))]),
    Users = join([integer_to_list(U) || U <- lists:sublist(Sample, 2)]),
    io:format("read back from uro_rec_recommendations (first 2 sample users, top 5):~n~s",
              [psql(Db, "SELECT user_id, rank, item_id, round(score::numeric, 3) AS score, "
                        "model_version FROM uro_rec_recommendations WHERE model = 'demo_als' "
                        "AND user_id IN ('" ++ lists:flatten(string:replace(Users, " ", "','", all))
                        ++ "') AND rank <= 5 ORDER BY user_id, rank", table)]).

psql(Db, Sql) -> psql(Db, Sql, plain).
psql(Db, Sql, Format) ->
    Flags = case Format of plain -> "-qAt"; table -> "-q" end,
    os:cmd("psql '" ++ Db ++ "' " ++ Flags ++ " -v ON_ERROR_STOP=1 -c \"" ++ Sql ++ "\" 2>&1").

show_user(Port, U, ByUser, Held) ->
    Consumed = maps:get(U, ByUser, []),
    {ok, Recs} = call(Port, {recommend, <<"demo_als">>, U, 10, #{scores => true}}),
    H = maps:get(U, Held),
    io:format("user ~b (~b consumed)~n  consumed:    ~s~n  recommended: ~s~n", [U, length(Consumed),
              join([integer_to_list(I) || I <- lists:sublist(Consumed, 12)]) ++
                  if length(Consumed) > 12 -> " ..."; true -> "" end,
              join([io_lib:format("~b~s(~.2f)", [I, mark(I, H), S]) || {I, S} <- Recs])]).

mark(I, I) -> "*";
mark(_, _) -> "".

join(L) -> lists:flatten(lists:join(" ", L)).

fmt_metrics(M) ->
    join([io_lib:format("~s ~.4f", [K, V]) || {K, V} <- lists:sort(maps:to_list(M))]).

pct(Sorted, P) ->
    N = length(Sorted),
    lists:nth(max(1, min(N, round(P / 100 * N + 0.5 - 1.0e-9))), Sorted).

top_unconsumed(Popular, Consumed, N) ->
    C = sets:from_list(Consumed),
    lists:sublist([I || I <- Popular, not sets:is_element(I, C)], N).

%% user -> consumed items, latest first
group(Rows) ->
    lists:foldl(fun({U, I, _, _}, M) -> maps:update_with(U, fun(L) -> [I | L] end, [I], M) end,
                #{}, lists:keysort(4, Rows)).

popular(Rows) ->
    Counts = lists:foldl(fun({_, I, _, _}, M) -> maps:update_with(I, fun(C) -> C + 1 end, 1, M) end,
                         #{}, Rows),
    [I || {_, I} <- lists:sort([{-C, I} || {I, C} <- maps:to_list(Counts)])].

%% The last interaction (by time) of each user with >= 5 is held out.
split(Rows) ->
    ByUser = group(Rows),
    Held = maps:from_list([{U, I} || {U, [I | _] = L} <- maps:to_list(ByUser), length(L) >= 5]),
    Train = [R || R = {U, I, _, _} <- Rows, maps:get(U, Held, none) =/= I],
    {Train, Held}.

%% ---- data -------------------------------------------------------------------------------------

generate(Exe, Python, Tmp) ->
    Csv = filename:join(Tmp, "all.csv"),
    PyDir = filename:join([filename:dirname(filename:absname(Exe)), "..", "python"]),
    Cmd = lists:flatten(io_lib:format(
            "cd '~s' && '~s' -m uro_rec.datagen --users ~b --items ~b --interactions ~b "
            "--seed 1 --out '~s' 2>&1; echo \"rc=$?\"",
            [PyDir, Python, ?USERS, ?ITEMS, ?INTERACTIONS, Csv])),
    Out = case Python of "" -> "rc=1"; _ -> os:cmd(Cmd) end,
    case string:find(Out, "rc=0") =/= nomatch andalso filelib:is_regular(Csv) of
        true ->
            io:format("data: uro_rec.datagen (seed 1) -> ~s~n", [Csv]),
            read_csv(Csv);
        false ->
            io:format("data: uro_rec.datagen unavailable (~ts); generating in Erlang~n",
                      [string:trim(Out)]),
            erlang_data(?USERS, ?ITEMS, ?INTERACTIONS)
    end.

read_csv(Path) ->
    {ok, Bin} = file:read_file(Path),
    [_Header | Lines] = binary:split(Bin, <<"\n">>, [global, trim_all]),
    [begin
         [U, I, L, T] = binary:split(Line, <<",">>, [global]),
         {binary_to_integer(U), binary_to_integer(I), binary_to_integer(L), binary_to_integer(T)}
     end || Line <- Lines].

write_csv(Path, Rows) ->
    ok = file:write_file(Path, ["user,item,label,time\n" |
                                [io_lib:format("~b,~b,~b,~b~n", [U, I, L, T]) || {U, I, L, T} <- Rows]]).

%% Fallback generator: power-law item popularity and user activity, a taste (item group) per
%% user followed 85% of the time, unique pairs.
erlang_data(NUsers, NItems, N) ->
    rand:seed(exsss, {1, 1, 1}),
    Tastes = 12,
    Perm = list_to_tuple([I || {_, I} <- lists:sort([{rand:uniform(), I} || I <- lists:seq(1, NItems)])]),
    PopW = [{1 / math:pow(R, 0.9), element(R, Perm)} || R <- lists:seq(1, NItems)],
    Global = cdf(PopW),
    ByTaste = list_to_tuple([cdf([{W, I} || {W, I} <- PopW, I rem Tastes =:= T])
                             || T <- lists:seq(0, Tastes - 1)]),
    UserCdf = cdf([{1 / math:pow(R, 0.6), R} || R <- lists:seq(1, NUsers)]),
    gen(N, UserCdf, Global, ByTaste, Tastes, #{}, []).

gen(0, _, _, _, _, _, Acc) -> lists:reverse(Acc);
gen(Left, UC, G, BT, Tastes, Seen, Acc) ->
    U = sample(UC, rand:uniform()),
    I = case rand:uniform() < 0.85 of
            true -> sample(element(U rem Tastes + 1, BT), rand:uniform());
            false -> sample(G, rand:uniform())
        end,
    case maps:is_key({U, I}, Seen) of
        true -> gen(Left, UC, G, BT, Tastes, Seen, Acc);
        false -> gen(Left - 1, UC, G, BT, Tastes, Seen#{{U, I} => 1},
                     [{U, I, 1, 1600000000 + 60 * length(Acc)} | Acc])
    end.

cdf(WeightedItems) ->
    Total = lists:sum([W || {W, _} <- WeightedItems]),
    {L, _} = lists:mapfoldl(fun({W, I}, Acc) -> {{Acc + W / Total, I}, Acc + W / Total} end,
                            0, WeightedItems),
    list_to_tuple(L).

sample(T, X) -> sample(T, X, 1, tuple_size(T)).
sample(T, _X, Lo, Lo) -> element(2, element(Lo, T));
sample(T, X, Lo, Hi) ->
    Mid = (Lo + Hi) div 2,
    case element(1, element(Mid, T)) >= X of
        true -> sample(T, X, Lo, Mid);
        false -> sample(T, X, Mid + 1, Hi)
    end.

%% ---- port client ------------------------------------------------------------------------------

call(Port, Cmd) ->
    Ref = make_ref(),
    true = port_command(Port, term_to_binary({call, Ref, Cmd})),
    await(Port, Ref).

await(Port, Ref) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, Reply} -> Reply;
                {event, _, #{type := epoch, epoch := E, loss := L}} ->
                    io:format("  epoch ~b loss ~.4f~n", [E, L]), await(Port, Ref);
                {log, error, Msg} -> io:format("  [port] ~ts~n", [Msg]), await(Port, Ref);
                _ -> await(Port, Ref)
            end;
        {Port, {exit_status, S}} -> io:format("port exited with ~p~n", [S]), halt(1)
    after ?TIMEOUT -> io:format("no reply in time~n"), halt(1)
    end.
