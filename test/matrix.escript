#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% The model matrix: every algorithm uro_rec serves, trained through the port on a small
%% seeded dataset, asked for recommendations (recommend, then recommend_many for the same
%% users), saved, loaded in a FRESH port process, asked again both ways; all the answers must be
%% equal (=:=). Every algorithm that takes features runs twice: without and with them (`+feat`).
%%
%%   escript test/matrix.escript PORT_EXE [ALGORITHM...]
%%
%% Prints a table (algorithm, train seconds, result) and `N passed, M failed`; exit status 1
%% if any failed. Phase 1 trains every model in one port; phase 2 loads them all in a second,
%% fresh port on the same model dir. A crashed port is replaced and the run goes on.
-mode(compile).

-define(TIMEOUT, 300000).
-define(USERS, [1, 2, 3, 50, 120]).
-define(N, 10).

%% {Label, ModelName, Algorithm, Params}. BPR has two backends in libreco 1.5.2: TensorFlow
%% (use_tf => true, the default) and a Cython/numpy one (use_tf => false).
algorithms() ->
    E = #{embed_size => 16},
    [{"UserCF", "usercf", "UserCF", #{}},
     {"ItemCF", "itemcf", "ItemCF", #{}},
     {"RsUserCF", "rsusercf", "RsUserCF", #{}},
     {"RsItemCF", "rsitemcf", "RsItemCF", #{}},
     {"Swing", "swing", "Swing", #{}},
     {"ALS", "als", "ALS", E#{n_epochs => 2}},
     {"BPR (tf)", "bpr_tf", "BPR", E#{n_epochs => 2, use_tf => true}},
     {"BPR (cython)", "bpr_cy", "BPR", E#{n_epochs => 2, use_tf => false}},
     {"SVD", "svd", "SVD", E#{n_epochs => 2}},
     {"SVDpp", "svdpp", "SVDpp", E#{n_epochs => 1}},
     {"NCF", "ncf", "NCF", E#{n_epochs => 1, hidden_units => {32, 16}}},
     {"Item2Vec", "item2vec", "Item2Vec", E#{n_epochs => 2, n_threads => 1}},
     {"DeepWalk", "deepwalk", "DeepWalk", E#{n_epochs => 1, n_walks => 2, walk_length => 5,
                                              n_threads => 1}},
     {"NGCF", "ngcf", "NGCF", E#{n_epochs => 1, hidden_units => {16, 16}}},
     {"LightGCN", "lightgcn", "LightGCN", E#{n_epochs => 1}},
     {"PinSage", "pinsage", "PinSage", E#{n_epochs => 1}},
     {"GraphSage", "graphsage", "GraphSage", E#{n_epochs => 1}},
     {"RNN4Rec", "rnn4rec", "RNN4Rec", E#{n_epochs => 1}},
     {"Caser", "caser", "Caser", E#{n_epochs => 1}},
     {"WaveNet", "wavenet", "WaveNet", E#{n_epochs => 1}},
     {"YouTubeRetrieval", "ytretrieval", "YouTubeRetrieval", E#{n_epochs => 1}},
     {"TwoTower", "twotower", "TwoTower", E#{n_epochs => 1}},
     {"YouTubeRanking", "ytranking", "YouTubeRanking", E#{n_epochs => 1}},
     {"FM", "fm", "FM", E#{n_epochs => 1}},
     {"WideDeep", "widedeep", "WideDeep", E#{n_epochs => 1}},
     {"DeepFM", "deepfm", "DeepFM", E#{n_epochs => 1}},
     {"AutoInt", "autoint", "AutoInt", E#{n_epochs => 1}},
     {"DIN", "din", "DIN", E#{n_epochs => 1}},
     {"Transformer", "transformer", "Transformer", E#{n_epochs => 1}},
     {"SIM", "sim", "SIM", E#{n_epochs => 1}}] ++ feature_algorithms(E).

%% Every algorithm that takes features, trained on them: user features from a users source
%% (sparse text, dense, sparse boolean), item features from an items source (sparse text,
%% sparse integer, multi_sparse tags, dense). YouTubeRetrieval takes user features only.
feature_algorithms(E) ->
    Users = {rows, [{U, #{<<"country">> => lists:nth(U rem 5 + 1, [<<"de">>, <<"jp">>, <<"us">>, <<"br">>, <<"fr">>]),
                          <<"friends">> => float(U rem 17), <<"verified">> => U rem 3 =:= 0}}
                    || U <- lists:seq(1, 200)]},
    Items = {rows, [{I, #{<<"kind">> => lists:nth(I rem 3 + 1, [<<"world">>, <<"avatar">>, <<"prop">>]),
                          <<"uploader">> => I rem 11,
                          <<"tags">> => [<<"t", (integer_to_binary(I rem 7))/binary>>
                                         | [<<"x", (integer_to_binary(I rem 5))/binary>> || I rem 2 =:= 0]],
                          <<"age_days">> => float(I rem 13)}}
                    || I <- lists:seq(1, 150)]},
    UserF = #{<<"country">> => sparse, <<"friends">> => dense, <<"verified">> => sparse},
    ItemF = #{<<"kind">> => sparse, <<"uploader">> => sparse, <<"tags">> => multi_sparse,
              <<"age_days">> => dense},
    Both = #{user => UserF, item => ItemF, users => Users, items => Items},
    [{A ++ "+feat", string:lowercase(A) ++ "_feat", A, E#{n_epochs => 1},
      case A of
          "YouTubeRetrieval" -> maps:without([item, items], Both);
          _ -> Both
      end}
     || A <- ["WideDeep", "FM", "DeepFM", "YouTubeRetrieval", "YouTubeRanking", "AutoInt", "DIN",
              "GraphSage", "PinSage", "TwoTower", "Transformer", "SIM"]].

main([Exe | Only]) ->
    T0 = erlang:monotonic_time(millisecond),
    Algos = case Only of
                [] -> algorithms();
                _ -> [A || A <- algorithms(),
                           lists:member(element(1, A), Only) orelse lists:member(element(3, A), Only)]
            end,
    Dir = filename:join("/tmp", "uro_matrix_" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Rows = dataset(200, 150, 3000),
    io:format("matrix: ~b algorithms, ~b users x ~b items x ~b interactions, model dir ~s~n",
              [length(Algos), 200, 150, length(Rows), Dir]),
    %% phase 1: train, recommend and recommend_many (in-process determinism), save (train saves)
    {Trained, P1} = lists:mapfoldl(fun(A, P) -> train_one(Exe, Dir, Rows, A, P) end,
                                   start(Exe, Dir), Algos),
    stop(P1),
    %% phase 2: a fresh process loads every saved model and answers again
    {Results, P2} = lists:mapfoldl(fun(T, P) -> check_one(Exe, Dir, T, P) end,
                                   start(Exe, Dir), Trained),
    stop(P2),
    os:cmd("rm -rf '" ++ Dir ++ "'"),
    io:format("~n~-22s ~-14s  ~s~n", ["algorithm", "train s (wall)", "result"]),
    io:format("~s~n", [lists:duplicate(78, $-)]),
    lists:foreach(fun({Label, Secs, Res}) ->
                          io:format("~-22s ~-14s  ~ts~n", [Label, fmt_secs(Secs), show(Res)])
                  end, Results),
    Failed = length([x || {_, _, {fail, _}} <- Results]),
    Passed = length(Results) - Failed,
    io:format("~nwall time ~.1f s~n", [(erlang:monotonic_time(millisecond) - T0) / 1000]),
    io:format("~b passed, ~b failed~n", [Passed, Failed]),
    halt(if Failed =:= 0 -> 0; true -> 1 end);
main(_) ->
    io:format("usage: matrix.escript PORT_EXE [ALGORITHM...]~n"),
    halt(2).

fmt_secs(undefined) -> "-";
fmt_secs({S, W}) -> io_lib:format("~.2f (~.1f)", [S, W]).

show({pass, Note}) -> "pass" ++ Note;
show({fail, Why}) -> "FAIL " ++ lists:flatten(Why).

train_one(Exe, Dir, Rows, {Label, Name, Algo, Params}, P0) ->
    train_one(Exe, Dir, Rows, {Label, Name, Algo, Params, none}, P0);
train_one(Exe, Dir, Rows, {Label, Name, Algo, Params, Features}, P0) ->
    P = ensure(Exe, Dir, P0),
    Spec0 = #{algorithm => list_to_binary(Algo), data => {rows, Rows}, params => Params},
    Spec = case Features of
               none -> Spec0;
               _ -> Spec0#{features => Features}
           end,
    io:format("  train ~-22s", [Label]),
    T0 = erlang:monotonic_time(millisecond),
    case call(P, {train, list_to_binary(Name), Spec}) of
        {ok, #{seconds := Secs, version := V}} when is_integer(V) ->
            Wall = (erlang:monotonic_time(millisecond) - T0) / 1000,
            R1 = recs(P, Name),
            R2 = many(P, Name),
            io:format(" ~6.2f s (wall ~.2f)~n", [Secs, Wall]),
            {{Label, Name, {Secs, Wall}, {trained, R1, R2}}, P};
        Other ->
            io:format(" failed~n"),
            {{Label, Name, undefined, {fail, io_lib:format("train: ~0tp", [Other])}}, P}
    end.

check_one(_Exe, _Dir, {Label, _Name, Secs, {fail, Why}}, P) ->
    {{Label, Secs, {fail, Why}}, P};
check_one(Exe, Dir, {Label, Name, Secs, {trained, R1, R2}}, P0) ->
    P = ensure(Exe, Dir, P0),
    Res = case call(P, {load, list_to_binary(Name), #{version => latest}}) of
              {ok, #{version := _}} ->
                  R3 = recs(P, Name),
                  case many(P, Name) of
                      R3 -> verdict(R1, R2, R3);
                      M3 -> {fail, "after load, recommend_many =/= recommend: " ++ diff(R3, M3)}
                  end;
              Other ->
                  {fail, io_lib:format("load: ~0tp", [Other])}
          end,
    call(P, {unload, list_to_binary(Name)}),
    {{Label, Secs, Res}, P}.

%% R1, R2: the training process's answers from recommend and from recommend_many; R3: the
%% fresh process's after load (whose recommend_many was already checked against it).
verdict(R1, R2, R3) ->
    case {ok_recs(R1), R1 =:= R2, R3 =:= R1} of
        {false, _, _} -> {fail, io_lib:format("recommend: ~0tp", [R1])};
        {true, true, true} -> {pass, ""};
        {true, false, _} ->
            {fail, "recommend_many =/= recommend in one process: " ++ diff(R1, R2)};
        {true, true, false} ->
            {fail, "after load: " ++ diff(R1, R3)}
    end.

ok_recs(Rs) ->
    lists:all(fun({_U, {ok, L}}) -> is_list(L) andalso length(L) =:= ?N;
                 (_) -> false end, Rs).

diff(A, B) ->
    [{U, X, Y} | _] = [{U, X, Y} || {{U, X}, {U, Y}} <- lists:zip(A, B), X =/= Y],
    lists:flatten(io_lib:format("user ~p: ~0tp vs ~0tp", [U, X, Y])).

recs(P, Name) ->
    [{U, call(P, {recommend, list_to_binary(Name), U, ?N, #{}})} || U <- ?USERS ++ [999999]].

%% The same users through recommend_many, in recs/2's shape: must be =:= recs/2's answer.
many(P, Name) ->
    Users = ?USERS ++ [999999],
    case call(P, {recommend_many, list_to_binary(Name), Users, ?N, #{}}) of
        {ok, M} when is_map(M) -> [{U, {ok, maps:get(U, M, missing)}} || U <- Users];
        Other -> [{U, Other} || U <- Users]
    end.

%% ---- data -------------------------------------------------------------------------------------

%% Deterministic: rand seeded; item popularity ~ 1/rank (power law, items shuffled so that
%% popularity is not the id order); every user gets interactions; pairs unique; Time = row.
dataset(NUsers, NItems, N) ->
    rand:seed(exsss, {17, 42, 4711}),
    Perm = [I || {_, I} <- lists:sort([{rand:uniform(), I} || I <- lists:seq(1, NItems)])],
    Weights = [1 / R || R <- lists:seq(1, NItems)],
    Total = lists:sum(Weights),
    {Cum, _} = lists:mapfoldl(fun(W, Acc) -> {Acc + W / Total, Acc + W / Total} end, 0, Weights),
    Table = list_to_tuple(lists:zip(Cum, Perm)),
    %% first a round of one interaction per user, then random users
    Users = lists:seq(1, NUsers) ++ [rand:uniform(NUsers) || _ <- lists:seq(1, 4 * N)],
    pick(Users, Table, N, #{}, []).

pick(_, _, 0, _, Acc) -> lists:reverse(Acc);
pick([], _, _, _, Acc) -> lists:reverse(Acc);
pick([U | Us], Table, Left, Seen, Acc) ->
    I = sample(Table, rand:uniform()),
    case maps:is_key({U, I}, Seen) of
        true -> pick(Us, Table, Left, Seen, Acc);
        false ->
            T = 1700000000 + length(Acc) * 60,
            pick(Us, Table, Left - 1, Seen#{{U, I} => true}, [{U, I, 1, T} | Acc])
    end.

%% binary search in the cumulative distribution
sample(Table, X) -> sample(Table, X, 1, tuple_size(Table)).
sample(Table, _X, Lo, Lo) -> element(2, element(Lo, Table));
sample(Table, X, Lo, Hi) ->
    Mid = (Lo + Hi) div 2,
    case element(1, element(Mid, Table)) >= X of
        true -> sample(Table, X, Lo, Mid);
        false -> sample(Table, X, Mid + 1, Hi)
    end.

%% ---- port client ------------------------------------------------------------------------------

start(Exe, Dir) ->
    open_port({spawn_executable, Exe},
              [binary, {packet, 4}, exit_status, {args, ["--model-dir", Dir]}]).

ensure(Exe, Dir, P) ->
    case erlang:port_info(P) of
        undefined -> io:format("  (port died: starting a new one)~n"), start(Exe, Dir);
        _ -> P
    end.

stop(P) -> catch port_close(P), ok.

call(P, Cmd) ->
    Ref = make_ref(),
    try port_command(P, term_to_binary({call, Ref, Cmd})) of
        true -> await(P, Ref)
    catch error:badarg -> {error, {port_closed, Cmd}}
    end.

await(P, Ref) ->
    receive
        {P, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, Reply} -> Reply;
                {reply, Other, Reply} -> {error, {ref_mismatch, Other, Reply}};
                {log, error, Msg} -> io:format("~n    [port error log] ~ts~n", [Msg]), await(P, Ref);
                {log, _, _} -> await(P, Ref);
                {event, _, _} -> await(P, Ref)
            end;
        {P, {exit_status, S}} ->
            catch port_close(P),
            {error, {port_exited, S}}
    after ?TIMEOUT ->
            catch port_close(P),
            {error, timeout}
    end.
