#!/usr/bin/env escript
%% -*- erlang -*-
%% Writes the seed frames of the libFuzzer corpus (test/fuzz/README: how the committed corpus
%% was made): call frames of every command shape and echo of every term type, compressed
%% forms, and the hand-written edge cases of the validator.
%%
%%   escript test/fuzz/seeds.escript DIR
-mode(compile).

main([Dir]) ->
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Terms = [1, -1, 255, 256, 1 bsl 31, 1 bsl 64, -(1 bsl 100), 1.5, -0.0, 5.0e-324, a, 'josé',
             '🙂', true, nil, undefined, <<"text">>, <<255, 254, 0>>, <<>>, <<1:3>>, "chars", [],
             [1, [2, [3]]], [a | b], {}, {a, {b, c}}, #{}, #{a => 1, <<"b">> => [2], 3 => {4}},
             #{#{k => v} => [x]}, lists:seq(1, 40), list_to_tuple(lists:seq(1, 300)),
             self(), make_ref(), fun erlang:self/0, fun(X) -> X end, hd(erlang:ports())],
    Calls = [ping, info] ++ [{echo, T} || T <- Terms] ++
        [{recommend, <<"m">>, 1, 10, #{scores => true}}, {recommend_many, <<"m">>, [1, 2], 5},
         {similar_items, <<"m">>, <<200, 1>>, 5}, {predict, <<"m">>, 1, [1, 2]},
         {train, <<"m">>, #{algorithm => <<"ALS">>, data => {rows, [{1, 2, 1.0}]}}}],
    Frames = [term_to_binary(T) || T <- Terms]
        ++ [term_to_binary({call, R, C}) || C <- Calls, R <- [1, make_ref()]]
        ++ [term_to_binary({call, 7, C, #{timeout_ms => 100}}) || C <- Calls]
        ++ [term_to_binary({call, 8, C}, [compressed]) || C <- lists:sublist(Calls, 10)]
        ++ [term_to_binary(T, [{minor_version, 0}]) || T <- [1.5, a, 'josé']]
        ++ edges(),
    [ok = file:write_file(filename:join(Dir, io_lib:format("seed_~4..0b", [N])), F)
     || {N, F} <- lists:zip(lists:seq(1, length(Frames)), Frames)],
    io:format("~b seeds in ~s~n", [length(Frames), Dir]);
main(_) ->
    io:format("usage: seeds.escript DIR~n"), halt(2).

edges() ->
    Node = <<119, 13, "nonode@nohost">>,
    [<<131, 104, 3, 119, 4, "call", 119, 2, 192, 128, 119, 4, "ping">>,
     <<131, 90, 0, 4, Node/binary, 0:32, 1:32, 2:32, 3:32, 4:32>>,
     <<131, 90, 0, 0, Node/binary, 0:32>>,
     <<131, 70, 16#7FF8000000000000:64>>,
     <<131, 99, "1,5", 0:28/unit:8>>,
     <<131, 77, 1:32, 8, 255>>,
     <<131, 116, 2:32, 97, 1, 97, 2, 98, 1:32, 97, 3>>,
     <<131, 113, 119, 6, "erlang", 119, 4, "self", 98, 300:32>>,
     <<131, 75, 0, 0, 1>>,
     <<131, 97, 1, 1, 2, 3>>].
