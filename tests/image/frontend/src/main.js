// The value is compiled into the bundle by `vite build` (a build argument of
// the image), and served from the environment by the dev server.
export const userServiceUrl = import.meta.env.VITE_USER_SERVICE_URL;

document.querySelector("#app").textContent = `fixture-bundle user service at ${userServiceUrl}`;
