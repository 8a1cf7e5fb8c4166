/*
 * echo_port.c: the benchmark's baseline, a port with the same framing and nothing else.
 *
 * It answers {call, Ref, Command} with {reply, Ref, {ok, Command}} by splicing bytes, never
 * decoding the command. bench/bench.escript interleaves calls to it with calls to the real
 * port, so what uro_recommender adds over bare framing and the BEAM's port machinery can be
 * read off call by call. It trusts its input (ei_skip_term, no validation): it only ever
 * talks to the benchmark.
 */
#include "erlcmd.h"

#include <ei.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

static struct erlcmd cmd;
static ei_x_buff x;

static void on_frame(enum erlcmd_status status, const char *frame, size_t len, void *cookie)
{
    (void)cookie;
    int index = 0, version, arity;
    x.index = 0;
    ei_x_encode_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "reply");
    if (status != ERLCMD_FRAME || ei_decode_version(frame, &index, &version) < 0 ||
        ei_decode_tuple_header(frame, &index, &arity) < 0 || arity < 3 ||
        ei_skip_term(frame, &index) < 0) {
        ei_x_encode_atom(&x, "undefined");
        ei_x_encode_atom(&x, "bad_frame");
    } else {
        int ref = index;
        ei_skip_term(frame, &index);
        ei_x_append_buf(&x, frame + ref, index - ref);
        int command = index;
        ei_skip_term(frame, &index);
        ei_x_encode_tuple_header(&x, 2);
        ei_x_encode_atom(&x, "ok");
        ei_x_append_buf(&x, frame + command, index - command);
    }
    erlcmd_send(&cmd, x.buff, (size_t)x.index);
}

int main(void)
{
    ei_x_new(&x);
    erlcmd_init(&cmd, STDIN_FILENO, STDOUT_FILENO, 64u << 20, on_frame, NULL);
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    while (poll(&pfd, 1, -1) >= 0)
        if (erlcmd_process(&cmd) < 0)
            break;
    return 0;
}
