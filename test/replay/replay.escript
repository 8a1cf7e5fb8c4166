#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% Term-replay harness for uro_recommender (see test/replay/README.md).
%%
%%   escript test/replay/replay.escript PORT_EXE SESSION_FILE...
%%
%% Every session runs against a fresh port with its own temporary --model-dir (removed after).
%% Prints `ok NAME` / `FAIL NAME` per session (with each failing entry, the expected pattern and
%% the actual reply), then `N passed, M failed` where N and M count entries over all sessions.
%% Exit status 0 iff nothing failed.
-mode(compile).

-define(CALL_TIMEOUT, 120000).
-define(CLOSE_TIMEOUT, 2000).

main([Exe | Sessions]) when Sessions =/= [] ->
    case filelib:is_regular(Exe) of
        true -> ok;
        false -> io:format("replay: no such port executable ~s~n", [Exe]), halt(2)
    end,
    AbsExe = filename:absname(Exe),
    Results = [run_session(AbsExe, S) || S <- Sessions],
    Passed = lists:sum([P || {P, _} <- Results]),
    Failed = lists:sum([F || {_, F} <- Results]),
    io:format("~b passed, ~b failed~n", [Passed, Failed]),
    halt(if Failed =:= 0 -> 0; true -> 1 end);
main(_) ->
    io:format("usage: replay.escript PORT_EXE SESSION_FILE...~n"),
    halt(2).

%% ---- sessions ---------------------------------------------------------------------------------

-record(st, {exe, dir, args = [], env = [], port, status_file, bindings = [],
             logs = [], events = [], seq = 0, passed = 0, failed = [], name}).

run_session(Exe, File) ->
    Name = filename:basename(File),
    T0 = erlang:monotonic_time(millisecond),
    case file:consult(File) of
        {error, Reason} ->
            io:format("FAIL ~s: cannot read: ~s~n", [Name, file:format_error(Reason)]),
            {0, 1};
        {ok, Entries0} ->
            {Opts, Entries} = case Entries0 of
                                  [{options, O} | Rest] when is_map(O) -> {O, Rest};
                                  _ -> {#{}, Entries0}
                              end,
            Dir = make_temp_dir(),
            %% ModelDir: the session's --model-dir, bound for patterns and '$eval'.
            St0 = #st{exe = Exe, dir = Dir, name = Name,
                      bindings = erl_eval:add_binding('ModelDir', Dir, erl_eval:new_bindings()),
                      args = [to_list(A) || A <- maps:get(args, Opts, [])],
                      env = [{to_list(K), to_list(V)} || {K, V} <- maps:get(env, Opts, [])]},
            St1 = start_port(St0),
            St2 = lists:foldl(fun run_entry/2, St1, Entries),
            St3 = close_entry(St2, {shutdown}),
            os:cmd("rm -rf '" ++ Dir ++ "'"),
            Ms = erlang:monotonic_time(millisecond) - T0,
            case St3#st.failed of
                [] ->
                    io:format("ok   ~s (~b entries, ~.1f s)~n",
                              [Name, St3#st.passed, Ms / 1000]);
                Fails ->
                    io:format("FAIL ~s (~b ok, ~b failed, ~.1f s)~n",
                              [Name, St3#st.passed, length(Fails), Ms / 1000]),
                    [print_failure(F) || F <- lists:reverse(Fails)]
            end,
            {St3#st.passed, length(St3#st.failed)}
    end.

print_failure({N, Entry, Why}) ->
    io:format("  entry ~b: ~ts~n    ~ts~n", [N, trunc_text(io_lib:format("~tp", [Entry]), 600),
                                              trunc_text(Why, 4000)]).

trunc_text(Chars, Max) ->
    S = lists:flatten(Chars),
    case length(S) > Max of
        true -> lists:sublist(S, Max) ++ "...";
        false -> S
    end.

make_temp_dir() ->
    Base = case os:getenv("TMPDIR") of false -> "/tmp"; T -> T end,
    Dir = filename:join(Base, "uro_replay_" ++ os:getpid() ++ "_" ++
                            integer_to_list(erlang:unique_integer([positive]))),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Dir.

%% The port runs under /bin/sh so that its exit status is observable after port_close (which
%% is how Erlang sends EOF to a port): the shell writes it to a file.
start_port(St = #st{exe = Exe, dir = Dir, args = Args, env = Env}) ->
    StatusFile = filename:join(Dir, ".exit_status." ++
                                   integer_to_list(erlang:unique_integer([positive]))),
    Script = "\"$0\" \"$@\"; s=$?; echo $s > \"$URO_REPLAY_STATUS\"; exit $s",
    Port = open_port({spawn_executable, "/bin/sh"},
                     [binary, {packet, 4}, exit_status,
                      {args, ["-c", Script, Exe, "--model-dir", Dir | Args]},
                      {env, [{"URO_REPLAY_STATUS", StatusFile} | Env]}]),
    St#st{port = Port, status_file = StatusFile, logs = [], events = []}.

pass(St) -> St#st{passed = St#st.passed + 1}.
fail(St, Entry, Why) -> St#st{failed = [{St#st.seq, Entry, Why} | St#st.failed]}.

run_entry(Entry, St0) ->
    St = St0#st{seq = St0#st.seq + 1},
    try entry(Entry, St)
    catch C:E:Stk ->
            fail(St, Entry, io_lib:format("harness error ~p:~tp~n~tp", [C, E, Stk]))
    end.

entry({call, Cmd, Pattern}, St) ->
    call_entry({call, Cmd, Pattern}, Cmd, none, Pattern, St);
entry({call, Cmd, CallOpts, Pattern}, St) ->
    call_entry({call, Cmd, CallOpts, Pattern}, Cmd, {opts, CallOpts}, Pattern, St);
entry(E = {raw, Bytes0, Pattern}, St) ->
    Bytes = subst(Bytes0, St#st.bindings),
    case send(St, Bytes) of
        ok ->
            case await(St#st{logs = [], events = []}, any) of
                {reply, _Ref, Value, St1} -> match_entry(E, Pattern, Value, St1);
                {dead, Why, St1} -> fail(St1, E, Why)
            end;
        {error, Why} -> fail(St, E, Why)
    end;
entry(E = {expect_log, Pattern}, St) -> expect(E, Pattern, #st.logs, St);
entry(E = {expect_event, Pattern}, St) -> expect(E, Pattern, #st.events, St);
entry({sleep, Ms}, St) -> timer:sleep(Ms), pass(St);
entry(E = {bind, Expr}, St) ->
    %% {bind, "V = Expr"}: evaluate with the session's bindings, keep the new ones.
    {ok, Tokens, _} = erl_scan:string(Expr ++ "."),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    try erl_eval:exprs(Exprs, St#st.bindings) of
        {value, _, B} -> pass(St#st{bindings = B})
    catch C:Err -> fail(St, E, io_lib:format("~p:~tp", [C, Err]))
    end;
entry(E = {restart}, St) ->
    St1 = close_entry(St, E),
    start_port(St1);
entry(E = {options, _}, St) ->
    fail(St, E, "options must be the first entry of a session");
entry(E, St) ->
    fail(St, E, "unknown entry").

call_entry(E, Cmd0, Opts, Pattern, St) ->
    Cmd = subst(Cmd0, St#st.bindings),
    Ref = next_ref(St#st.seq),
    Frame = case Opts of
                none -> {call, Ref, Cmd};
                {opts, O} -> {call, Ref, Cmd, subst(O, St#st.bindings)}
            end,
    case send(St, term_to_binary(Frame)) of
        ok ->
            %% LastRef: the Ref of the latest call, for expect_event patterns.
            B = erl_eval:add_binding('LastRef', Ref, St#st.bindings),
            case await(St#st{logs = [], events = [], bindings = B}, Ref) of
                {reply, Ref, Value, St1} -> match_entry(E, Pattern, Value, St1);
                {reply, Other, Value, St1} ->
                    fail(St1, E, io_lib:format("Ref not echoed: sent ~p, got ~p with ~tp",
                                               [Ref, Other, Value]));
                {dead, Why, St1} -> fail(St1, E, Why)
            end;
        {error, Why} -> fail(St, E, Why)
    end.

%% Refs of every shape: the port must copy them byte for byte.
next_ref(Seq) ->
    case Seq rem 5 of
        0 -> make_ref();
        1 -> Seq;
        2 -> {Seq, self()};
        3 -> make_ref();
        4 -> (1 bsl 70) + Seq
    end.

send(#st{port = Port}, Bytes) when is_binary(Bytes) ->
    try port_command(Port, Bytes), ok
    catch error:badarg -> {error, "port is closed"}
    end;
send(_, Bytes) ->
    {error, io_lib:format("raw payload is not a binary: ~tp", [Bytes])}.

%% Waits for the next reply, collecting log and event frames on the way.
await(St = #st{port = Port}, Ref) ->
    receive
        {Port, {data, Bin}} ->
            case catch binary_to_term(Bin) of
                {reply, R, V} -> {reply, R, V, St};
                L = {log, _, _} -> await(St#st{logs = St#st.logs ++ [L]}, Ref);
                Ev = {event, _, _} -> await(St#st{events = St#st.events ++ [Ev]}, Ref);
                Other ->
                    {dead, io_lib:format("unexpected frame from the port: ~tp", [Other]), St}
            end;
        {Port, {exit_status, S}} ->
            {dead, io_lib:format("port exited with status ~p while waiting for a reply (last "
                                 "logs: ~tp)", [S, lists:sublist(lists:reverse(St#st.logs), 5)]),
             St}
    after ?CALL_TIMEOUT ->
            {dead, io_lib:format("no reply within ~b ms", [?CALL_TIMEOUT]), St}
    end.

%% Log/event frames that arrive between calls (none should, but collect them anyway).
drain(St = #st{port = Port}, Wait) ->
    receive
        {Port, {data, Bin}} ->
            case catch binary_to_term(Bin) of
                L = {log, _, _} -> drain(St#st{logs = St#st.logs ++ [L]}, Wait);
                Ev = {event, _, _} -> drain(St#st{events = St#st.events ++ [Ev]}, Wait);
                _ -> drain(St, Wait)
            end
    after Wait -> St
    end.

expect(E, Pattern, Field, St0) ->
    St = drain(St0, 0),
    case first_match(Pattern, element(Field, St), St) of
        {ok, St1} -> pass(St1);
        nomatch ->
            St2 = drain(St, 1000),
            case first_match(Pattern, element(Field, St2), St2) of
                {ok, St3} -> pass(St3);
                nomatch ->
                    fail(St2, E, io_lib:format("no frame matched ~ts; got ~b frames:~n~ts",
                                               [Pattern, length(element(Field, St2)),
                                                show_frames(element(Field, St2))]))
            end;
        {error, Why} -> fail(St, E, Why)
    end.

show_frames(Frames) ->
    [io_lib:format("      ~tp~n", [F]) || F <- lists:sublist(Frames, 20)].

first_match(_Pattern, [], _St) -> nomatch;
first_match(Pattern, [F | Fs], St) ->
    case match(Pattern, F, St#st.bindings) of
        {match, B} -> {ok, St#st{bindings = B}};
        nomatch -> first_match(Pattern, Fs, St);
        {error, Why} -> {error, Why}
    end.

match_entry(E, Pattern, Value, St) ->
    case match(Pattern, Value, St#st.bindings) of
        {match, B} -> pass(St#st{bindings = B});
        nomatch ->
            fail(St, E, io_lib:format("expected ~ts~n    actual   ~tp", [Pattern, Value]));
        {error, Why} -> fail(St, E, Why)
    end.

%% Closes the port as Erlang does (EOF on its stdin) and checks it exits with status 0.
close_entry(St = #st{port = Port, status_file = File}, E) ->
    St0 = drain(St, 0),
    Early = receive {Port, {exit_status, S0}} -> {exited, S0} after 0 -> running end,
    catch port_close(Port),
    Result = case Early of
                 {exited, S} -> {error, io_lib:format("port had already exited with ~p", [S])};
                 running -> wait_status(File, ?CLOSE_TIMEOUT)
             end,
    case Result of
        {ok, 0} -> pass(St0);
        {ok, N} -> fail(St0, E, io_lib:format("port exited with status ~b on EOF", [N]));
        {error, Why} -> fail(St0, E, Why)
    end.

wait_status(File, Left) ->
    case file:read_file(File) of
        {ok, Bin} when byte_size(Bin) > 0 ->
            {ok, binary_to_integer(string:trim(Bin))};
        _ when Left =< 0 ->
            {error, "port did not exit within 2 s of EOF"};
        _ ->
            timer:sleep(20),
            wait_status(File, Left - 20)
    end.

%% ---- patterns ---------------------------------------------------------------------------------

%% Pattern: text of a case clause head ("Pat" or "Pat when Guard"). Variables already bound in
%% the session constrain the match; new ones are added to the bindings. Map associations
%% (`=>`, as ~p prints maps) are read as `:=` so that a printed reply matches itself.
match(Pattern, Value, Bindings) ->
    case parse_clause(Pattern) of
        {ok, P, G} ->
            %% Variables starting with _ are local to the entry; the others stay bound.
            Vars = [V || V <- lists:usort(pattern_vars(P)), hd(atom_to_list(V)) =/= $_],
            L = erl_anno:new(1),
            Body = {tuple, L, [{atom, L, '$matched'},
                               {tuple, L, [{var, L, V} || V <- Vars]}]},
            Case = {'case', L, {var, L, 'Uro__Value'},
                    [{clause, L, [P], G, [Body]},
                     {clause, L, [{var, L, '_'}], [], [{atom, L, '$nomatch'}]}]},
            B0 = erl_eval:add_binding('Uro__Value', Value, Bindings),
            try erl_eval:expr(Case, B0) of
                {value, {'$matched', Tuple}, _} ->
                    B = lists:foldl(fun({V, X}, Acc) -> erl_eval:add_binding(V, X, Acc) end,
                                    Bindings, lists:zip(Vars, tuple_to_list(Tuple))),
                    {match, B};
                {value, '$nomatch', _} -> nomatch
            catch C:Err ->
                    {error, io_lib:format("cannot evaluate pattern ~ts: ~p:~tp", [Pattern, C, Err])}
            end;
        {error, Why} -> {error, Why}
    end.

parse_clause(Pattern) when is_list(Pattern) ->
    Text = "case x of " ++ Pattern ++ " -> ok end.",
    case erl_scan:string(Text) of
        {ok, Tokens, _} ->
            case erl_parse:parse_exprs(Tokens) of
                {ok, [{'case', _, _, [{clause, _, [P], G, _}]}]} -> {ok, assoc_to_exact(P), G};
                {ok, _} -> {error, io_lib:format("pattern is not one clause: ~ts", [Pattern])};
                {error, {_, M, D}} ->
                    {error, io_lib:format("bad pattern ~ts: ~ts", [Pattern, M:format_error(D)])}
            end;
        {error, {_, M, D}, _} ->
            {error, io_lib:format("bad pattern ~ts: ~ts", [Pattern, M:format_error(D)])}
    end;
parse_clause(Pattern) ->
    {error, io_lib:format("pattern must be a string, got ~tp", [Pattern])}.

assoc_to_exact({map_field_assoc, L, K, V}) -> {map_field_exact, L, K, assoc_to_exact(V)};
assoc_to_exact(T) when is_tuple(T) -> list_to_tuple(assoc_to_exact(tuple_to_list(T)));
assoc_to_exact(L) when is_list(L) -> [assoc_to_exact(X) || X <- L];
assoc_to_exact(X) -> X.

pattern_vars({var, _, '_'}) -> [];
pattern_vars({var, _, V}) -> [V];
pattern_vars(T) when is_tuple(T) -> pattern_vars(tuple_to_list(T));
pattern_vars(L) when is_list(L) -> lists:append([pattern_vars(X) || X <- L]);
pattern_vars(_) -> [].

%% {'$eval', "Expr"} anywhere in a command, CallOpts or raw payload is replaced by the value
%% of Expr, evaluated with the session's bindings (for pids, refs, funs, deep terms, ...).
subst({'$eval', Expr}, B) when is_list(Expr) ->
    {ok, Tokens, _} = erl_scan:string(Expr ++ "."),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, V, _} = erl_eval:exprs(Exprs, B),
    V;
subst(T, B) when is_tuple(T) -> list_to_tuple(subst(tuple_to_list(T), B));
subst([H | T], B) -> [subst(H, B) | subst_tail(T, B)];
subst(M, B) when is_map(M) -> maps:from_list([{subst(K, B), subst(V, B)} || {K, V} <- maps:to_list(M)]);
subst(X, _) -> X.

%% Keeps improper lists improper.
subst_tail([H | T], B) -> [subst(H, B) | subst_tail(T, B)];
subst_tail([], _) -> [];
subst_tail(Tail, B) -> subst(Tail, B).

to_list(B) when is_binary(B) -> binary_to_list(B);
to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(I) when is_integer(I) -> integer_to_list(I);
to_list(L) when is_list(L) -> L.
