#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% The frame property test, and the frame-mutation fuzzer against the real executable
%% (docs/OPERATIONS.md, "Fuzzing and soak"):
%%
%%   escript test/property.escript PORT_EXE [--frames N] [--seconds S] [--seed I]
%%                                          [--window W] [--rss-growth-mb M]
%%
%% Sends N frames (default 20000; stops earlier after S seconds, default 60): valid call
%% frames, mutations of them (byte flips, truncations, inserted and deleted bytes, tag swaps,
%% copied runs, compressed forms) and random bytes, W at a time (default 16). For every frame,
%% binary_to_term on this BEAM is the oracle:
%%
%%   - the BEAM refuses it: the port answers {reply, undefined, {error, {bad_frame, _}}};
%%   - the BEAM reads {call, Ref, Command} or {call, Ref, Command, Opts}: the reply carries
%%     a Ref =:= Ref and is {ok, _} or an error other than bad_frame (the documented refusals,
%%     pids, funs..., are badarg);
%%   - the BEAM reads another term: bad_frame with Ref undefined;
%%   - the documented exceptions (docs/PROTOCOL.md) are bad_frame: erts's internal
%%     atom-index tags (73, 75), which binary_to_term reads as indexes into its own atom table,
%%     and a local reference without words, which it reads as the last element of a tuple only.
%%
%% Every frame gets exactly one reply, in order (a sentinel ping ends each window), and every
%% frame the port sends decodes with binary_to_term. The port's resident memory is sampled every
%% window; with --rss-growth-mb M the run fails if the last sample exceeds the first by more.
%% Prints the counts; exit status 0 iff every check held.
-mode(compile).

-define(REPLY_TIMEOUT, 60000).

main(Args) ->
    case parse(Args, #{frames => 20000, seconds => 60, seed => 13, window => 16,
                       rss_growth_mb => none}) of
        {ok, Exe, Opts} -> run(Exe, Opts);
        error ->
            io:format("usage: property.escript PORT_EXE [--frames N] [--seconds S] [--seed I] "
                      "[--window W] [--rss-growth-mb M]~n"),
            halt(2)
    end.

parse([Exe | Rest], Opts) -> parse_opts(Rest, Exe, Opts);
parse([], _) -> error.

parse_opts([], Exe, Opts) -> {ok, Exe, Opts};
parse_opts([Flag, Value | Rest], Exe, Opts) ->
    Key = list_to_atom(lists:flatten(string:replace(string:prefix(Flag, "--"), "-", "_", all))),
    case maps:is_key(Key, Opts) of
        true -> parse_opts(Rest, Exe, Opts#{Key := list_to_integer(Value)});
        false -> error
    end;
parse_opts(_, _, _) -> error.

%% ---- the run ------------------------------------------------------------------------------

run(Exe, #{frames := Total, seconds := Seconds, seed := Seed, window := W} = Opts) ->
    rand:seed(exsss, {Seed, Seed * 7, Seed * 13}),
    Dir = "/tmp/uro_property_" ++ os:getpid(),
    ok = filelib:ensure_dir(Dir ++ "/"),
    Port = open_port({spawn_executable, filename:absname(Exe)},
                     [binary, {packet, 4}, exit_status, {args, ["--model-dir", Dir]}]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    port_command(Port, term_to_binary({call, ready, info, #{}})),
    {ok, _} = await(Port, ready),
    Deadline = erlang:monotonic_time(millisecond) + Seconds * 1000,
    Seeds = seeds(),
    St0 = #{sent => 0, beam_ok => 0, beam_refused => 0, kinds => #{}, failures => [],
            rss => [rss_kb(OsPid)]},
    St = loop(Port, OsPid, Seeds, Total, W, Deadline, St0),
    port_close(Port),
    os:cmd("rm -rf '" ++ Dir ++ "'"),
    report(St, Opts).

loop(_Port, _OsPid, _Seeds, Left, _W, _Deadline, St) when Left =< 0 -> St;
loop(Port, OsPid, Seeds, Left, W, Deadline, St) ->
    case erlang:monotonic_time(millisecond) > Deadline orelse length(maps:get(failures, St)) > 20 of
        true -> St;
        false ->
            Frames = [frame(Seeds) || _ <- lists:seq(1, min(W, Left))],
            [port_command(Port, F) || F <- Frames],
            Sentinel = {sentinel, erlang:unique_integer()},
            port_command(Port, term_to_binary({call, Sentinel, ping})),
            St1 = lists:foldl(fun(F, S) -> check(Port, F, S) end, St, Frames),
            St2 = case await(Port, Sentinel) of
                      {ok, pong} -> St1;
                      Other -> fail(St1, <<>>, {sentinel, Other})
                  end,
            St3 = St2#{sent := maps:get(sent, St2) + length(Frames),
                       rss := [rss_kb(OsPid) | maps:get(rss, St2)]},
            loop(Port, OsPid, Seeds, Left - length(Frames), W, Deadline, St3)
    end.

%% One frame's reply against the oracle.
check(Port, Frame, St) ->
    Oracle = try {accepted, binary_to_term(Frame)} catch _:_ -> refused end,
    Reply = next_reply(Port),
    St1 = case Oracle of
              refused -> bump(beam_refused, St);
              _ -> bump(beam_ok, St)
          end,
    St2 = case Reply of
              {reply, _, {error, {Kind, _}}} -> count_kind(Kind, St1);
              {reply, _, {ok, _}} -> count_kind(ok, St1);
              _ -> St1
          end,
    case verdict(Oracle, Reply) of
        ok -> St2;
        {bad, Why} -> fail(St2, Frame, {Why, Reply})
    end.

verdict(_, {undecodable, _} = U) -> {bad, U};
verdict(_, timeout) -> {bad, no_reply};
verdict(refused, {reply, undefined, {error, {bad_frame, _}}}) -> ok;
verdict(refused, _) -> {bad, port_accepted_what_the_beam_refuses};
verdict({accepted, _}, {reply, undefined, {error, {bad_frame, <<"erts-internal atom index", _/binary>>}}}) ->
    ok; % a documented disagreement (docs/PROTOCOL.md): an index into the client's atom table
verdict({accepted, _}, {reply, undefined, {error, {bad_frame, <<"identifier at byte ", Rest/binary>>}}})
  when binary_part(Rest, byte_size(Rest), -29) =:= <<"local reference without words">> ->
    ok; % the other: binary_to_term reads it as the last element of a tuple only
verdict({accepted, T}, Reply) when is_tuple(T), tuple_size(T) =:= 3 orelse tuple_size(T) =:= 4,
                                   element(1, T) =:= call ->
    Ref = element(2, T),
    case Reply of
        {reply, R, {error, {bad_frame, _}}} when R =:= undefined -> {bad, port_refused_a_call};
        {reply, R, {ok, _}} when R =:= Ref -> ok;
        {reply, R, {error, {_, _}}} when R =:= Ref -> ok;
        _ -> {bad, reply_does_not_carry_the_ref}
    end;
verdict({accepted, _}, {reply, undefined, {error, {bad_frame, _}}}) -> ok;
verdict({accepted, _}, _) -> {bad, not_a_call_but_not_bad_frame}.

%% The next reply frame, skipping logs and events; every frame must decode.
next_reply(Port) ->
    receive
        {Port, {data, Bin}} ->
            try binary_to_term(Bin) of
                {log, _, _} -> next_reply(Port);
                {event, _, _} -> next_reply(Port);
                Term -> Term
            catch _:_ -> {undecodable, Bin}
            end;
        {Port, {exit_status, S}} -> io:format("port exited with status ~p~n", [S]), halt(1)
    after ?REPLY_TIMEOUT -> timeout
    end.

await(Port, Ref) ->
    case next_reply(Port) of
        {reply, Ref, Result} -> Result;
        Other -> {unexpected, Other}
    end.

bump(Key, St) -> St#{Key := maps:get(Key, St) + 1}.
count_kind(Kind, St = #{kinds := K}) -> St#{kinds := maps:update_with(Kind, fun(N) -> N + 1 end, 1, K)}.
fail(St = #{failures := F}, Frame, Why) -> St#{failures := [{Frame, Why} | F]}.

rss_kb(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status") of
        {ok, Text} ->
            case re:run(Text, "VmRSS:\\s+(\\d+)", [{capture, all_but_first, list}]) of
                {match, [Kb]} -> list_to_integer(Kb);
                nomatch -> 0
            end;
        _ -> 0
    end.

report(#{sent := Sent, beam_ok := Ok, beam_refused := Refused, kinds := Kinds,
         failures := Failures, rss := Rss}, #{rss_growth_mb := Growth}) ->
    [Last | _] = Rss,
    First = lists:last(Rss),
    Max = lists:max(Rss),
    io:format("property: ~b frames: binary_to_term accepted ~b, refused ~b; port replies: ~s~n",
              [Sent, Ok, Refused,
               lists:join(", ", [io_lib:format("~p ~b", [K, N]) || {K, N} <- lists:sort(maps:to_list(Kinds))])]),
    io:format("property: port RSS first ~b MB, last ~b MB, max ~b MB (~b samples)~n",
              [First div 1024, Last div 1024, Max div 1024, length(Rss)]),
    RssOk = Growth =:= none orelse Last - First =< Growth * 1024,
    RssOk orelse io:format("FAIL: RSS grew by ~b MB, more than ~b MB~n",
                           [(Last - First) div 1024, Growth]),
    [io:format("FAIL: frame ~w~n      ~P~n", [Frame, Why, 30]) || {Frame, Why} <- lists:reverse(Failures)],
    case Failures =:= [] andalso RssOk andalso Sent > 0 of
        true -> io:format("property: ok~n"), halt(0);
        false -> halt(1)
    end.

%% ---- frames -------------------------------------------------------------------------------

%% Valid calls: every command shape the tests use cheaply (an unknown model answers fast),
%% Refs of every kind, echo of every type in the type table.
seeds() ->
    Seed = rand:uniform(1000),
    Refs = [make_ref(), 1, 123456789, 1 bsl 70, -5, {7, self()}, self(), 'josé', <<"r">>,
            [1, 2], #{a => 1}, 1.5, "abc", <<1:3>>, fun(X) -> X + Seed end],
    Echo = [1, -1, 1 bsl 64, -(1 bsl 100), 1.25, -0.0, 5.0e-324, a, 'josé', '🙂', true, nil,
            <<"text">>, <<255, 254, 0>>, <<>>, "chars", [1, [2, [3]]], {}, {a, {b}}, #{},
            #{a => 1, <<"b">> => [2], 3 => {4}}, lists:seq(1, 300), list_to_tuple(lists:seq(1, 40)),
            [a | b], <<1:5>>, self(), make_ref(), fun erlang:self/0, fun(X) -> {X, Refs} end],
    Cmds = [ping, info, models, {echo, hd(Echo)}]
        ++ [{echo, T} || T <- Echo]
        ++ [{recommend, <<"nomodel">>, 1, 10}, {recommend, <<"nomodel">>, <<"u">>, 10, #{scores => true}},
            {similar_items, <<"nomodel">>, <<255, 254, 0>>, 5}, {predict, <<"nomodel">>, 1, [1, 2]},
            {recommend_many, <<"nomodel">>, [1, 2, 3], 5}, {unknown_command, 1}, {}, 42],
    Opts = [none, #{}, #{timeout_ms => 5000}, [{timeout_ms, 5000}], [scores], #{timeout_ms => -1}, 7],
    list_to_tuple([encode(R, C, O) || R <- Refs, C <- Cmds, O <- Opts, rand:uniform(6) =:= 1]).

encode(Ref, Cmd, none) -> term_to_binary({call, Ref, Cmd});
encode(Ref, Cmd, Opts) -> term_to_binary({call, Ref, Cmd, Opts}).

pick(Seeds) -> element(rand:uniform(tuple_size(Seeds)), Seeds).

frame(Seeds) ->
    Base = pick(Seeds),
    case rand:uniform(20) of
        1 -> Base;
        2 -> <<131, (random_bytes(rand:uniform(40)))/binary>>;
        3 -> compress(mutate(Base));
        4 -> mutate(compress(Base));
        _ -> mutate(Base)
    end.

compress(<<131, Rest/binary>>) -> <<131, 80, (byte_size(Rest)):32, (zlib:compress(Rest))/binary>>;
compress(Other) -> Other.

mutate(Bin) ->
    lists:foldl(fun(_, B) -> mutate_once(B) end, Bin, lists:seq(1, rand:uniform(3))).

%% The tags of the external format: a tag swap puts one where another was.
-define(TAGS, [70, 77, 82, 88, 89, 90, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108,
               109, 110, 111, 112, 113, 114, 115, 116, 118, 119, 120]).

mutate_once(<<>>) -> <<131>>;
mutate_once(Bin) ->
    N = byte_size(Bin),
    At = rand:uniform(N) - 1,
    <<Pre:At/binary, Byte, Post/binary>> = Bin,
    case rand:uniform(8) of
        1 -> <<Pre/binary, (rand:uniform(256) - 1), Post/binary>>;                  % byte
        2 -> <<Pre/binary, (Byte bxor (1 bsl (rand:uniform(8) - 1))), Post/binary>>; % bit
        3 -> binary:part(Bin, 0, At);                                                % cut
        4 -> <<Pre/binary, (random_bytes(rand:uniform(4)))/binary, Byte, Post/binary>>;
        5 -> <<Pre/binary, Post/binary>>;                                            % delete
        6 -> <<Pre/binary, (lists:nth(rand:uniform(length(?TAGS)), ?TAGS)), Post/binary>>;
        7 -> <<Pre/binary, (interesting()), Post/binary>>;                           % limits
        8 -> Len = rand:uniform(min(16, N - At)),                                    % copy
             <<Pre/binary, (binary:part(Bin, At, Len))/binary, Byte, Post/binary>>
    end.

interesting() ->
    lists:nth(rand:uniform(10), [0, 1, 3, 4, 5, 6, 127, 128, 192, 255]).

random_bytes(N) -> << <<(rand:uniform(256) - 1)>> || _ <- lists:seq(1, N) >>.
