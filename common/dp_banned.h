/* common/dp_banned.h - functions we never call (idea from git's banned.h).
 * Included last by every .c file through common/dp_common.h. */
#ifndef DP_BANNED_H
#define DP_BANNED_H

#define DP_BANNED(func) sorry_##func##_is_banned_use_snprintf_or_strtol

#undef strcpy
#define strcpy(x, y) DP_BANNED(strcpy)
#undef strcat
#define strcat(x, y) DP_BANNED(strcat)
#undef sprintf
#define sprintf(...) DP_BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) DP_BANNED(vsprintf)
#undef strtok
#define strtok(x, y) DP_BANNED(strtok)
#undef atoi
#define atoi(x) DP_BANNED(atoi)
#undef atol
#define atol(x) DP_BANNED(atol)

#endif
