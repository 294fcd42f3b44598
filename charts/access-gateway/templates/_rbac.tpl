{{/*
The rules for what the operator does in the namespaces it watches: a ClusterRole's rules when it
watches the whole cluster, each watched namespace's Role's otherwise. Every verb is one the
operator's code uses (src/controller/cluster-state.ts, src/controller/gateway-reconciler.ts, src/kube/).
*/}}
{{- define "access-gateway.namespacedRules" -}}
# AccessGateways are the operator's input: listed and watched (informers; nothing is read with a
# single get: whether a gateway whose status write was refused was made again is a list by name).
- apiGroups: [access-gateway.io]
  resources: [accessgateways]
  verbs: [list, watch]
# Status (conditions, listener port and URL) is written with a JSON patch of /status that tests
# the gateway's uid; the operator never writes the spec or metadata of a gateway.
- apiGroups: [access-gateway.io]
  resources: [accessgateways/status]
  verbs: [patch]
# The agw-NAME Service and EndpointSlice are owned by their gateway (ownerReference with
# blockOwnerDeletion). Clusters that run the OwnerReferencesPermissionEnforcement admission plugin
# require update on the owner's finalizers to set that; custom resources serve no finalizers
# subresource, so this grants nothing else.
- apiGroups: [access-gateway.io]
  resources: [accessgateways/finalizers]
  verbs: [update]
# Services: list/watch for the backends of service routes; create/patch for the server-side apply
# (field manager access-gateway) of each programmed gateway's selector-less agw-NAME Service (an
# apply that creates is authorized as create too). RBAC cannot limit create, nor a list, to a name
# prefix, so these verbs reach every Service in scope; rbac.validatingAdmissionPolicy holds the
# operator's writes to agw-* names.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
# EndpointSlices: list/watch for the ready endpoints of backends; create/patch for the server-side
# apply of each gateway's agw-NAME EndpointSlice (the ready operator pods at the listener port).
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch, create, patch]
{{- if eq (.Values.operator.endpointAddresses | default "pods") "pods" }}
# Pods: list/watch, so a backend's EndpointSlice address is used only when it is an IP of the
# running pod its endpoint names, in the Service's namespace (operator.endpointAddresses: pods).
# The cache keeps a pod's name, uid, phase and IPs, and whether it is being deleted.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
{{- end }}
# Listener certificates (Secrets labelled access-gateway.io/listener-tls=true) and upstream CA
# bundles (Secrets and ConfigMaps labelled access-gateway.io/ca-bundle=true). The operator lists
# and watches only labelled objects, but RBAC cannot restrict list/watch by label: these verbs
# allow reading every Secret and ConfigMap in scope.
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [list, watch]
# ReferenceGrants admit routes to Services in other namespaces (optional: without the Gateway API
# CRDs nothing is granted).
- apiGroups: [gateway.networking.k8s.io]
  resources: [referencegrants]
  verbs: [list, watch]
# Events on AccessGateways when Ready changes: created, then their count patched.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}
