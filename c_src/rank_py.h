/*
 * rank_py.h: rank_top (c_src/rank.c) in the port's built-in module _uro_port (rank_py.c).
 */
#ifndef URO_RANK_PY_H
#define URO_RANK_PY_H

#include "pytypes.h"

int rank_module_init(PyObject *module); /* adds rank_top to _uro_port */

#endif
