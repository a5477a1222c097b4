/* The official nginx image's /docker-entrypoint.d/: peerprep-init does not
 * run what is in it (an init that runs arbitrary shell scripts brings back
 * the shell entrypoint's problems, and the image's own four scripts are
 * built in), but it says so, so that no customisation is dropped in
 * silence. */
#ifndef PI_ENTRYPOINTD_H
#define PI_ENTRYPOINTD_H

/* Where the official image's entrypoint looks for scripts. */
#define PI_ENTRYPOINTD_DIR "/docker-entrypoint.d"

/* Logs one warning when the folder ($PEERPREP_INIT_ENTRYPOINT_DIR from envp
 * when set and not empty, else PI_ENTRYPOINTD_DIR) holds files other than
 * the official image's four stock scripts (whose jobs the init does
 * itself) and hidden files: how many, and the first few names in
 * strcmp(3) order. Sub-folders are searched as the official entrypoint
 * does (to a bounded depth); symbolic links are followed. A missing folder
 * logs nothing; an unreadable one is a warning too. Never fails. */
void pi_entrypointd_warn(char *const *envp);

/* Logs one warning when envp sets NGINX_ENVSUBST_FILTER (not empty): the
 * official image substitutes the variables it matches, the init only
 * those named with templates.prefix, so a filter chosen for other names
 * would otherwise be dropped in silence. */
void pi_entrypointd_warn_filter(char *const *envp);

#endif
