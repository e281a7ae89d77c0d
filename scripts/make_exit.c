/* A GNU make plugin: $(exit N) ends make with exit status N.
   make's own status is only ever 0, 1 or 2, so without it `make plan` could not pass on
   plan's 3 (would be refused). Loaded by the Makefile when a C compiler is available. */
#include <stdio.h>
#include <stdlib.h>

int plugin_is_GPL_compatible;

typedef struct { const char *filenm; unsigned long lineno; } gmk_floc;
typedef char *(*gmk_func_ptr)(const char *name, unsigned int argc, char **argv);
extern void gmk_add_function(const char *name, gmk_func_ptr func, unsigned int min_args,
                             unsigned int max_args, unsigned int flags);

static char *func_exit(const char *name, unsigned int argc, char **argv) {
    (void)name; (void)argc;
    fflush(NULL);
    exit(atoi(argv[0]));
    return NULL;
}

int make_exit_gmk_setup(const gmk_floc *floc) {
    (void)floc;
    gmk_add_function("exit", func_exit, 1, 1, 0);
    return 1;
}
