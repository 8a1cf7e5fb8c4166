#!/usr/bin/env escript
%% -*- erlang -*-
%%! +pc unicode
%%
%% Round-trip latency of uro_recommender against the bare echo port (see bench/README.md).
%%
%%   escript bench/bench.escript PORT_EXE ECHO_PORT_EXE [VENV_PYTHON]
%%
%% Environment knobs (for quick runs): BENCH_ITERS (default 20000), BENCH_REC_ITERS (5000),
%% BENCH_USERS / BENCH_ITEMS / BENCH_INTERACTIONS (20000 / 10000 / 300000), BENCH_CPU (the CPU
%% both ports are pinned to; default the last one; "none" leaves placement to the scheduler).
%%
%% Both ports run on the same CPU (started through taskset) and each iteration alternates which
%% of them is called first: on these VMs an idle CPU halts at once and waking it costs tens of
%% microseconds, so two ports that happen to land on different CPUs would measure that chance,
%% not the port (docs/OPERATIONS.md, "CPU placement"). Where each port ran is printed.
-mode(compile).

-define(TIMEOUT, 600000).

main([Exe, EchoExe | Rest]) ->
    Python = case Rest of [Py | _] -> Py; [] -> "" end,
    T0 = erlang:monotonic_time(millisecond),
    Iters = env_int("BENCH_ITERS", 20000),
    RecIters = env_int("BENCH_REC_ITERS", 5000),
    NU = env_int("BENCH_USERS", 20000),
    NI = env_int("BENCH_ITEMS", 10000),
    NX = env_int("BENCH_INTERACTIONS", 300000),
    Tmp = filename:join("/tmp", "uro_bench_" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join([Tmp, "models", "x"])),
    Cpu = pin_cpu(),
    Port = open_pinned(Cpu, Exe, ["--model-dir", filename:join(Tmp, "models")]),
    Echo = open_pinned(Cpu, EchoExe, []),
    {ok, pong} = call(Port, ping),
    {ok, ping} = call(Echo, ping),
    placement("start", Cpu, Port, Echo),
    io:format("uro_recommender: ~ts~n", [describe(call(Port, info))]),
    io:format("machine: ~b schedulers online, OTP ~s, ~ts~n",
              [erlang:system_info(schedulers_online), erlang:system_info(otp_release),
               string:trim(os:cmd("nproc")) ++ " cores, load average " ++ loadavg()]),

    %% the model: ALS on generated data with 10k items
    Csv = filename:join(Tmp, "bench.csv"),
    Source = make_data(Exe, Python, Csv, NU, NI, NX),
    io:format("training ALS (~b users x ~b items x ~b interactions) ...~n", [NU, NI, NX]),
    T1 = erlang:monotonic_time(millisecond),
    {ok, #{n_items := Items, n_users := Users, seconds := Fit}} =
        call(Port, {train, <<"bench_als">>,
                    #{algorithm => <<"ALS">>, data => Source, save => false,
                      params => #{embed_size => 32, n_epochs => 3, n_threads => 2, seed => 1}}}),
    io:format("trained: ~b users x ~b items, fit ~.1f s, train call ~.1f s~n~n",
              [Users, Items, Fit, (erlang:monotonic_time(millisecond) - T1) / 1000]),

    SmallMap = #{user => 42, items => [1, 2, 3], name => <<"bench">>, score => 0.5},
    TenList = [1, 2.5, <<"three">>, four, {5, 6}, [7], 8000000000, -9, <<"ten">>, #{k => v}],
    rand:seed(exsss, {7, 7, 7}),
    UserOf = fun() -> rand:uniform(Users) end,  % datagen ids are 1..N
    Cases = [{"ping", fun() -> ping end, Iters, 1000},
             {"echo small map", fun() -> {echo, SmallMap} end, Iters, 1000},
             {"echo 10-item list", fun() -> {echo, TenList} end, Iters, 1000},
             {"recommend N=10", fun() -> {recommend, <<"bench_als">>, UserOf(), 10, #{}} end,
              RecIters, 500}],
    Results = [run_case(Port, Echo, C) || C <- Cases],

    io:format("~nround trip in microseconds (~s = uro_recommender, echo = bare echo port, "
              "interleaved call by call)~n", ["port"]),
    io:format("~-18s ~6s | ~8s ~8s ~8s | ~8s ~8s ~8s | ~9s ~6s | ~8s~n",
              ["call", "n", "port p50", "p99", "p999", "echo p50", "p99", "p999",
               "adds p50", "ratio", "calls/s"]),
    io:format("~s~n", [lists:duplicate(118, $-)]),
    [print_row(R) || R <- Results],
    io:format("~nload average at the end: ~s (2 cores: a load above ~~1 means the numbers "
              "above include waiting for a CPU)~n", [loadavg()]),
    placement("end", Cpu, Port, Echo),
    io:format("~ntargets~n"),
    [Ping, _Map, List, Rec] = Results,
    Checks = [target("ping adds <= 10 us at p50", adds(Ping), 10),
              target("echo of a 10-item list adds <= 30 us at p50", adds(List), 30),
              target("recommend p99 < 2 ms (2000 us)", p(port, Rec, 99), 2000)],
    catch port_close(Port),
    catch port_close(Echo),
    os:cmd("rm -rf '" ++ Tmp ++ "'"),
    io:format("~nbench done in ~.1f s~n", [(erlang:monotonic_time(millisecond) - T0) / 1000]),
    halt(case lists:all(fun(X) -> X end, Checks) of true -> 0; false -> 1 end);
main(_) ->
    io:format("usage: bench.escript PORT_EXE ECHO_PORT_EXE [VENV_PYTHON]~n"),
    halt(2).

%% ---- placement --------------------------------------------------------------------------------

%% The CPU both ports are pinned to: BENCH_CPU, else the last one; none without taskset.
pin_cpu() ->
    case {os:getenv("BENCH_CPU"), os:find_executable("taskset")} of
        {"none", _} -> none;
        {_, false} -> none;
        {false, _} -> erlang:system_info(logical_processors_available) - 1;
        {"", _} -> erlang:system_info(logical_processors_available) - 1;
        {V, _} -> list_to_integer(V)
    end.

open_pinned(none, Exe, Args) ->
    open_port({spawn_executable, filename:absname(Exe)},
              [binary, {packet, 4}, exit_status, {args, Args}]);
open_pinned(Cpu, Exe, Args) ->
    %% taskset execs the program: the port's OS process is the program, pinned from its start,
    %% and the threads it starts (Python's, BLAS's) inherit the mask.
    open_port({spawn_executable, os:find_executable("taskset")},
              [binary, {packet, 4}, exit_status,
               {args, ["-c", integer_to_list(Cpu), filename:absname(Exe) | Args]}]).

placement(When, Cpu, Port, Echo) ->
    Pinned = case Cpu of none -> "not pinned"; _ -> io_lib:format("pinned to cpu ~b", [Cpu]) end,
    io:format("placement at the ~s (~s): port ~s, echo ~s~n",
              [When, Pinned, where(Port), where(Echo)]).

%% "pid P on cpu C (may use L)": the CPU the process last ran on (/proc/P/stat field 39) and its
%% allowed list.
where(Port) ->
    {os_pid, Pid} = erlang:port_info(Port, os_pid),
    P = integer_to_list(Pid),
    Last = case file:read_file("/proc/" ++ P ++ "/stat") of
               {ok, Stat} ->
                   [_, Rest] = string:split(Stat, ") ", trailing),
                   binary_to_list(lists:nth(37, string:lexemes(Rest, " ")));
               _ -> "?"
           end,
    Allowed = case file:read_file("/proc/" ++ P ++ "/status") of
                  {ok, Status} ->
                      case re:run(Status, "Cpus_allowed_list:\\s*(\\S+)",
                                  [{capture, all_but_first, list}]) of
                          {match, [L]} -> L;
                          _ -> "?"
                      end;
                  _ -> "?"
              end,
    io_lib:format("pid ~s on cpu ~s (may use ~s)", [P, Last, Allowed]).

loadavg() ->
    case file:read_file("/proc/loadavg") of
        {ok, B} -> lists:flatten(lists:join(" ", lists:sublist(string:lexemes(binary_to_list(B), " "), 3)));
        _ -> "?"
    end.

describe({ok, #{version := V, python := Py, librecommender := L}}) ->
    io_lib:format("version ~ts, python ~ts, libreco ~ts", [V, Py, L]);
describe(Other) -> io_lib:format("~0tp", [Other]).

env_int(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> list_to_integer(V)
    end.

%% Each iteration makes the same call on both ports; which port goes first alternates.
run_case(Port, Echo, {Name, MakeCmd, N, Warm}) ->
    io:format("~-18s warm-up ~b, measuring ~b x 2 ...", [Name, Warm, N]),
    [begin Cmd = MakeCmd(), {ok, _} = call(Port, Cmd), {ok, _} = call(Echo, Cmd) end
     || _ <- lists:seq(1, Warm)],
    W0 = erlang:monotonic_time(nanosecond),
    {PL, EL} = measure(Port, Echo, MakeCmd, N, 0, [], []),
    Wall = (erlang:monotonic_time(nanosecond) - W0) / 1.0e9,
    io:format(" ~.1f s~n", [Wall]),
    {Name, N, lists:sort(PL), lists:sort(EL)}.

measure(_, _, _, N, N, PL, EL) -> {PL, EL};
measure(Port, Echo, MakeCmd, N, I, PL, EL) ->
    Cmd = MakeCmd(),
    {P, E} = case I band 1 of
                 0 -> P0 = timed(Port, Cmd), {P0, timed(Echo, Cmd)};
                 1 -> E0 = timed(Echo, Cmd), {timed(Port, Cmd), E0}
             end,
    measure(Port, Echo, MakeCmd, N, I + 1, [P | PL], [E | EL]).

timed(Port, Cmd) ->
    S = erlang:monotonic_time(nanosecond),
    {ok, _} = call(Port, Cmd),
    (erlang:monotonic_time(nanosecond) - S) / 1000.

p(port, {_, _, PL, _}, Pct) -> pct(PL, Pct);
p(echo, {_, _, _, EL}, Pct) -> pct(EL, Pct).

adds(R) -> p(port, R, 50) - p(echo, R, 50).

print_row(R = {Name, N, PL, _EL}) ->
    P50 = p(port, R, 50),
    E50 = p(echo, R, 50),
    CallsPerSec = length(PL) / (lists:sum(PL) / 1.0e6),
    io:format("~-18s ~6b | ~8.1f ~8.1f ~8.1f | ~8.1f ~8.1f ~8.1f | ~9.1f ~5.1fx | ~8b~n",
              [Name, N, P50, p(port, R, 99), p(port, R, 99.9), E50, p(echo, R, 99),
               p(echo, R, 99.9), P50 - E50, P50 / E50, round(CallsPerSec)]).

target(Text, Value, Limit) ->
    Ok = Value =< Limit,
    io:format("  ~-4s ~-48s measured ~.1f us~n", [if Ok -> "PASS"; true -> "FAIL" end, Text, Value]),
    Ok.

%% nearest-rank percentile of a sorted list
pct(Sorted, P) ->
    N = length(Sorted),
    lists:nth(max(1, min(N, ceil(P / 100 * N))), Sorted).

%% ---- data -------------------------------------------------------------------------------------

%% uro_rec.datagen when it runs (python/ beside priv/), else rows generated here.
make_data(Exe, Python, Csv, NU, NI, NX) ->
    PyDir = filename:join([filename:dirname(filename:absname(Exe)), "..", "python"]),
    Cmd = lists:flatten(io_lib:format(
            "cd '~s' && '~s' -m uro_rec.datagen --users ~b --items ~b --interactions ~b "
            "--seed 1 --out '~s' 2>&1; echo \"rc=$?\"", [PyDir, Python, NU, NI, NX, Csv])),
    T0 = erlang:monotonic_time(millisecond),
    Out = case Python of "" -> "rc=1"; _ -> os:cmd(Cmd) end,
    case string:find(Out, "rc=0") =/= nomatch andalso filelib:is_regular(Csv) of
        true ->
            io:format("data: uro_rec.datagen in ~.1f s -> ~s~n",
                      [(erlang:monotonic_time(millisecond) - T0) / 1000, Csv]),
            {csv, list_to_binary(Csv)};
        false ->
            io:format("data: uro_rec.datagen unavailable (~ts); generating in Erlang~n",
                      [string:trim(Out)]),
            {rows, erlang_data(NU, NI, NX)}
    end.

%% power-law item popularity, uniform users, unique pairs
erlang_data(NUsers, NItems, N) ->
    rand:seed(exsss, {1, 1, 1}),
    W = [1 / math:pow(R, 0.9) || R <- lists:seq(1, NItems)],
    Total = lists:sum(W),
    {Cdf, _} = lists:mapfoldl(fun({X, I}, A) -> {{A + X / Total, I}, A + X / Total} end, 0,
                              lists:zip(W, lists:seq(1, NItems))),
    T = list_to_tuple(Cdf),
    gen(N, NUsers, T, #{}, []).

gen(0, _, _, _, Acc) -> Acc;
gen(Left, NU, T, Seen, Acc) ->
    U = rand:uniform(NU),
    I = sample(T, rand:uniform(), 1, tuple_size(T)),
    case maps:is_key({U, I}, Seen) of
        true -> gen(Left, NU, T, Seen, Acc);
        false -> gen(Left - 1, NU, T, Seen#{{U, I} => 1}, [{U, I, 1} | Acc])
    end.

sample(T, _X, Lo, Lo) -> element(2, element(Lo, T));
sample(T, X, Lo, Hi) ->
    Mid = (Lo + Hi) div 2,
    case element(1, element(Mid, T)) >= X of
        true -> sample(T, X, Lo, Mid);
        false -> sample(T, X, Mid + 1, Hi)
    end.

%% ---- port client ------------------------------------------------------------------------------

call(Port, Cmd) ->
    Ref = erlang:unique_integer([positive]),
    true = port_command(Port, term_to_binary({call, Ref, Cmd})),
    await(Port, Ref).

await(Port, Ref) ->
    receive
        {Port, {data, Bin}} ->
            case binary_to_term(Bin) of
                {reply, Ref, Reply} -> Reply;
                {reply, Other, Reply} -> error({ref_mismatch, Ref, Other, Reply});
                _ -> await(Port, Ref)  % log / event frames
            end;
        {Port, {exit_status, S}} -> io:format("port exited with ~p~n", [S]), halt(1)
    after ?TIMEOUT -> io:format("no reply in time~n"), halt(1)
    end.
