/*
 * copytext.h: the rows of an export in COPY's text format, built in C.
 *
 * An export writes about ten rows per user, each "model \t user \t rank \t item \t score \t
 * version \n". Formatting them in Python costs about 1 us a row, as much as computing the
 * lists; here it is a few memcpy calls and one float repr a row. Python reaches it as
 * _uro_port.copy_rows (python/uro_rec/export.py, through db.copy_rows, is its only caller).
 */
#ifndef URO_COPYTEXT_H
#define URO_COPYTEXT_H

#include "pytypes.h"

/* Writes src[0..len) to dst with COPY text escapes (backslash, tab, newline, carriage
 * return); dst has room for 2 * len bytes. Returns the bytes written. */
size_t copytext_escape(char *dst, const char *src, size_t len);

int copytext_module_init(PyObject *module);

#endif
