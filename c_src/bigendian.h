/*
 * bigendian.h: integers in network byte order, the order of every length and number the port
 * reads or writes byte by byte: the {packet,4} header (erlcmd.c), the external term format
 * (term.c, request.c), PostgreSQL's binary results (db_columns.c).
 *
 * Byte by byte on purpose: the bytes sit at any alignment inside a frame or a result, and
 * compilers turn these loops into one load and a byte swap.
 */
#ifndef URO_BIGENDIAN_H
#define URO_BIGENDIAN_H

#include <stdint.h>

static inline uint16_t be16(const void *at)
{
    const unsigned char *p = at;
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t be32(const void *at)
{
    const unsigned char *p = at;
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t be64(const void *at)
{
    return ((uint64_t)be32(at) << 32) | be32((const unsigned char *)at + 4);
}

static inline void put_be32(void *at, uint32_t v)
{
    unsigned char *p = at;
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

#endif
