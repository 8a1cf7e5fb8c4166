#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% The soak (make soak; docs/OPERATIONS.md): CALLS mixed calls against one real port, RSS sampled.
%%
%%   escript bench/soak.escript PORT_EXE [CALLS] [OUT.md]
%%
%% Trains a small ALS model, then sends CALLS calls (default 10^6), 32 in flight: ping, info,
%% recommend (with and without scores, known and unknown users), recommend_many,
%% similar_items, predict, and errors (unknown model, badarg, unknown command, a bad frame).
%% Every reply is checked against what its call must get. The port's VmRSS is read every 1 %
%% of the calls. A baseline is measured in the same run first: 20,000 pings, the cheapest call.
%% Writes OUT.md (default bench/SOAK.md) with calls, seconds, rates and RSS first/last/max.
%% Exit status 0 iff every reply was right and the port never died.
-mode(compile).

-define(WINDOW, 32).
-define(TIMEOUT, 120000).

main([Exe]) -> main([Exe, "1000000"]);
main([Exe, Calls]) -> main([Exe, Calls, "bench/SOAK.md"]);
main([Exe, CallsText, Out]) ->
    Calls = list_to_integer(CallsText),
    Dir = "/tmp/uro_soak_" ++ os:getpid(),
    ok = filelib:ensure_dir(Dir ++ "/"),
    Port = open_port({spawn_executable, filename:absname(Exe)},
                     [binary, {packet, 4}, exit_status, {args, ["--model-dir", Dir]}]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {ok, _} = call(Port, info),
    Rows = [{U, (U * 7 + K * 3) rem 200 + 1, 1} || U <- lists:seq(1, 500), K <- lists:seq(1, 10)],
    {ok, _} = call(Port, {train, <<"soak">>, #{algorithm => <<"ALS">>, data => {rows, Rows},
                                               params => #{embed_size => 16, n_epochs => 3},
                                               save => false}}),
    {BaseSeconds, ok} = run(Port, OsPid, 20000, fun(_) -> {ping, fun({ok, pong}) -> true end} end,
                            none),
    Rss0 = rss_kb(OsPid),
    Samples = ets:new(samples, [ordered_set, public]),
    ets:insert(Samples, {0, Rss0}),
    {Seconds, Result} = run(Port, OsPid, Calls, fun mixed/1, {Samples, max(1, Calls div 100)}),
    Rss = [R || {_, R} <- ets:tab2list(Samples)],
    port_close(Port),
    os:cmd("rm -rf '" ++ Dir ++ "'"),
    report(Out, Calls, Seconds, 20000, BaseSeconds, Rss, ets:tab2list(Samples), Result),
    halt(case Result of ok -> 0; _ -> 1 end);
main(_) ->
    io:format("usage: soak.escript PORT_EXE [CALLS] [OUT.md]~n"), halt(2).

%% The mix: {Command or {raw, Frame}, the check its reply must pass}.
mixed(N) ->
    U = N rem 600 + 1, % users 501..600 are unknown: cold start
    case N rem 20 of
        0 -> {ping, fun({ok, pong}) -> true end};
        1 -> {info, fun({ok, #{protocol := 1}}) -> true end};
        2 -> {{recommend_many, <<"soak">>, [U, U + 1, U + 2], 5},
              fun({ok, M}) -> map_size(M) =:= 3 end};
        3 -> {{similar_items, <<"soak">>, N rem 200 + 1, 5}, fun({ok, L}) -> length(L) =:= 5 end};
        4 -> {{predict, <<"soak">>, U, [1, 2, 3, 999]}, fun({ok, L}) -> length(L) =:= 4 end};
        5 -> {{recommend, <<"nomodel">>, U, 5}, fun({error, {unknown_model, _}}) -> true end};
        6 -> {{recommend, <<"soak">>, U, -1}, fun({error, {badarg, _}}) -> true end};
        7 -> {{no_such_command, U}, fun({error, {unknown_command, _}}) -> true end};
        8 -> {{raw, <<131, 104, 3, 119, 4, "call", 119, 2, 192, 128, 119, 4, "ping">>},
              fun({error, {bad_frame, _}}) -> true end};
        9 -> {{recommend, <<"soak">>, U, 10, #{scores => true}},
              fun({ok, L}) -> length(L) =:= 10 end};
        _ -> {{recommend, <<"soak">>, U, 10}, fun({ok, L}) -> length(L) =:= 10 end}
    end.

%% Sends Total calls of Gen(N), WINDOW in flight, checking replies in order.
run(Port, OsPid, Total, Gen, Sampling) ->
    T0 = erlang:monotonic_time(microsecond),
    Result = loop(Port, OsPid, 0, Total, Gen, queue:new(), Sampling),
    {(erlang:monotonic_time(microsecond) - T0) / 1.0e6, Result}.

loop(_Port, _OsPid, Sent, Total, _Gen, Q, _S) when Sent >= Total ->
    drain(_Port, Q);
loop(Port, OsPid, Sent, Total, Gen, Q, Sampling) ->
    case queue:len(Q) >= ?WINDOW of
        true ->
            {{value, Pending}, Q1} = queue:out(Q),
            case await(Port, Pending) of
                ok -> loop(Port, OsPid, Sent, Total, Gen, Q1, Sampling);
                Bad -> Bad
            end;
        false ->
            {Cmd, Check} = Gen(Sent),
            Ref = case Cmd of
                      {raw, Frame} -> port_command(Port, Frame), undefined;
                      _ -> port_command(Port, term_to_binary({call, Sent, Cmd})), Sent
                  end,
            sample(OsPid, Sent + 1, Sampling),
            loop(Port, OsPid, Sent + 1, Total, Gen, queue:in({Ref, Cmd, Check}, Q), Sampling)
    end.

sample(_OsPid, _N, none) -> ok;
sample(OsPid, N, {Tab, Every}) when N rem Every =:= 0 -> ets:insert(Tab, {N, rss_kb(OsPid)});
sample(_, _, _) -> ok.

drain(Port, Q) ->
    case queue:out(Q) of
        {empty, _} -> ok;
        {{value, Pending}, Q1} ->
            case await(Port, Pending) of
                ok -> drain(Port, Q1);
                Bad -> Bad
            end
    end.

await(Port, {Ref, Cmd, Check}) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, Reply} ->
                    case catch Check(Reply) of
                        true -> ok;
                        _ -> {bad_reply, Cmd, Reply}
                    end;
                {reply, Other, Reply} -> {wrong_ref, Ref, Other, Reply};
                _LogOrEvent -> await(Port, {Ref, Cmd, Check})
            end;
        {Port, {exit_status, S}} -> {port_exited, S}
    after ?TIMEOUT -> {no_reply, Cmd}
    end.

call(Port, Cmd) ->
    port_command(Port, term_to_binary({call, setup, Cmd})),
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, setup, R} -> R;
                _ -> call_wait(Port)
            end
    after ?TIMEOUT -> timeout
    end.

call_wait(Port) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, setup, R} -> R;
                _ -> call_wait(Port)
            end
    after ?TIMEOUT -> timeout
    end.

rss_kb(OsPid) ->
    {ok, Text} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(Text, "VmRSS:\\s+(\\d+)", [{capture, all_but_first, list}]),
    list_to_integer(Kb).

report(Out, Calls, Seconds, BaseCalls, BaseSeconds, Rss, Samples, Result) ->
    Rate = Calls / Seconds,
    BaseRate = BaseCalls / BaseSeconds,
    [First | _] = Rss,
    Last = lists:last(Rss),
    Max = lists:max(Rss),
    Mb = fun(Kb) -> io_lib:format("~.1f", [Kb / 1024]) end,
    Load = string:trim(os:cmd("cut -d' ' -f1-3 /proc/loadavg")),
    Every = [io_lib:format("| ~b | ~s |~n", [N, Mb(R)])
             || {N, R} <- Samples, N rem max(1, Calls div 10) =:= 0 orelse N =:= 0],
    Text = [
        "# Soak: mixed calls against one port\n\n",
        "`make soak` (bench/soak.escript). One port, a small ALS model (500 users, 200 items), ",
        "32 calls in flight; the mix: recommend 55 % (one in eleven with scores; users 501-600 ",
        "unknown, cold start), recommend_many, similar_items, predict, ping, info 5 % each, and ",
        "errors 20 % (unknown model, badarg, unknown command, a bad frame). Every reply checked.\n\n",
        io_lib:format("- result: ~p~n", [Result]),
        io_lib:format("- calls: ~b in ~.1f s: ~b calls/s~n", [Calls, Seconds, round(Rate)]),
        io_lib:format("- baseline in the same run: ~b pings in ~.1f s: ~b calls/s; the mix runs at "
                      "~.2f of the ping rate~n", [BaseCalls, BaseSeconds, round(BaseRate), Rate / BaseRate]),
        io_lib:format("- RSS: first ~s MB, last ~s MB, max ~s MB (last/first ~.3f), ~b samples~n",
                      [Mb(First), Mb(Last), Mb(Max), Last / First, length(Rss)]),
        io_lib:format("- machine: load average ~s at the end (~b cores), run with nice -n 10~n",
                      [Load, erlang:system_info(logical_processors_available)]),
        "\n| calls done | RSS MB |\n|---|---|\n", Every],
    ok = file:write_file(Out, unicode:characters_to_binary(Text)),
    io:format("~s", [Text]).
