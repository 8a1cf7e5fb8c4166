#!/usr/bin/env escript
%% -*- erlang -*-
%%! +S 1 +sbwt none +sbwtdcpu none +sbwtdio none
%%
%% The BEAM side of bench/catalogue_bench.py: a real Erlang client of the port, driven line by
%% line on stdin so the Python side can interleave it with the floor and LibRecommender.
%%
%% It runs on the port's CPU (taskset), so with one scheduler and no busy waiting (the flags
%% above): a BEAM scheduler that spins while it waits for the reply takes that CPU from the
%% port it waits for (measured: a 100k-item recommend took 2 to 4x its in-process time).
%%
%%   escript bench/catalogue_client.escript PORT_EXE MODEL_DIR
%%
%% Commands (one per line), answers on stdout:
%%   load NAME                 -> "LOAD <round trip us>"
%%   unload NAME               -> "UNLOADED"
%%   ping COUNT                -> "TIMES <us> ..." (the round trip alone, answered in C)
%%   rec NAME USERS COUNT      -> "TIMES <us> ..." (COUNT recommend N=10 round trips, users
%%                                drawn from 0..USERS-1)
%%   lists NAME U1,U2,...      -> "LIST <user> <item> ..." per user, then "END"
%%   pss NAME PORTS USERS      -> PORTS - 1 more ports load NAME, each port answers 20
%%                                recommends, then "PSS <os pid> <kB>" per port, "END"
%%   quit
-mode(compile).

-define(TIMEOUT, 600000).

main([Exe, ModelDir]) ->
    rand:seed(exsss, {11, 12, 13}),
    Port = open(Exe, ModelDir),
    {ok, pong} = call(Port, ping),
    io:format("READY ~b~n", [os_pid(Port)]),
    loop(Port, Exe, ModelDir);
main(_) ->
    io:format("usage: catalogue_client.escript PORT_EXE MODEL_DIR~n"),
    halt(2).

open(Exe, ModelDir) ->
    open_port({spawn_executable, Exe},
              [binary, {packet, 4}, exit_status, {args, ["--model-dir", ModelDir]}]).

os_pid(Port) ->
    {os_pid, P} = erlang:port_info(Port, os_pid),
    P.

loop(Port, Exe, ModelDir) ->
    case io:get_line("") of
        eof -> ok;
        Line ->
            case string:lexemes(string:trim(Line), " ") of
                ["quit"] -> ok;
                Cmd -> command(Cmd, Port, Exe, ModelDir), loop(Port, Exe, ModelDir)
            end
    end.

command(["load", Name], Port, _, _) ->
    {T, {ok, _}} = timed(fun() -> call(Port, {load, list_to_binary(Name)}) end),
    io:format("LOAD ~b~n", [T]);
command(["ping", Count], Port, _, _) ->
    Times = [element(1, timed(fun() -> {ok, pong} = call(Port, ping) end))
             || _ <- lists:seq(1, list_to_integer(Count))],
    io:format("TIMES ~s~n", [lists:join(" ", [integer_to_list(T) || T <- Times])]);
command(["unload", Name], Port, _, _) ->
    {ok, ok} = call(Port, {unload, list_to_binary(Name)}),
    io:format("UNLOADED~n");
command(["rec", Name, Users, Count], Port, _, _) ->
    N = list_to_integer(Users),
    Bin = list_to_binary(Name),
    Times = [begin
                 U = rand:uniform(N) - 1,
                 {T, {ok, L}} = timed(fun() -> call(Port, {recommend, Bin, U, 10, #{}}) end),
                 10 = length(L),
                 T
             end || _ <- lists:seq(1, list_to_integer(Count))],
    io:format("TIMES ~s~n", [lists:join(" ", [integer_to_list(T) || T <- Times])]);
command(["lists", Name, Users], Port, _, _) ->
    Bin = list_to_binary(Name),
    [begin
         U = list_to_integer(S),
         {ok, L} = call(Port, {recommend, Bin, U, 10, #{}}),
         io:format("LIST ~b ~s~n", [U, lists:join(" ", [integer_to_list(I) || I <- L])])
     end || S <- string:lexemes(Users, ",")],
    io:format("END~n");
command(["pss", Name, Count, Users], Port, Exe, ModelDir) ->
    Bin = list_to_binary(Name),
    Extra = [open(Exe, ModelDir) || _ <- lists:seq(2, list_to_integer(Count))],
    [{ok, _} = call(P, {load, Bin}) || P <- Extra],
    N = list_to_integer(Users),
    [[{ok, _} = call(P, {recommend, Bin, rand:uniform(N) - 1, 10, #{}}) || _ <- lists:seq(1, 20)]
     || P <- [Port | Extra]],
    [io:format("PSS ~b ~b~n", [os_pid(P), pss_kb(os_pid(P))]) || P <- [Port | Extra]],
    [port_close(P) || P <- Extra],
    io:format("END~n");
command(Other, _, _, _) ->
    io:format("ERROR unknown command ~p~n", [Other]).

%% Pss of /proc/PID/smaps_rollup: each shared page counted once, split between its mappers.
pss_kb(Pid) ->
    {ok, Text} = file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/smaps_rollup"),
    {match, [Kb]} = re:run(Text, "\\nPss:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb).

timed(F) ->
    T0 = erlang:monotonic_time(),
    R = F(),
    {erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond), R}.

call(Port, Cmd) ->
    Ref = erlang:unique_integer([positive]),
    true = port_command(Port, term_to_binary({call, Ref, Cmd})),
    await(Port, Ref).

await(Port, Ref) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, Reply} -> Reply;
                _ -> await(Port, Ref)  % log / event frames
            end;
        {Port, {exit_status, S}} -> io:format("ERROR port exited with ~p~n", [S]), halt(1)
    after ?TIMEOUT -> io:format("ERROR no reply in time~n"), halt(1)
    end.
