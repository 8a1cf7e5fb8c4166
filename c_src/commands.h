/*
 * commands.h: one request frame in, exactly one reply frame out.
 *
 * request.c turns the frame into a call; here Command is found in the dispatch table, run,
 * and answered, or the frame's refusal is. Nothing a client sends can make it skip the reply.
 */
#ifndef URO_COMMANDS_H
#define URO_COMMANDS_H

#include <stddef.h>

void commands_handle_frame(const char *frame, size_t len);

/* The --max-frame default (main.c): larger request frames are dropped unread (erlcmd.c). */
#define DEFAULT_MAX_FRAME (64u * 1024 * 1024)

/* Compressed terms may not inflate past this (the --max-frame limit). */
void commands_set_frame_limit(size_t limit);
void commands_handle_too_large(size_t len);

/* Python failed to start: commands that need it answer {error, {internal, Why}}. */
void commands_disable_python(const char *why);

#endif
