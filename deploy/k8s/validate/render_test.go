package validate

import (
	"fmt"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// objects is one rendered overlay, decoded: kind/name -> typed object.
type objects map[string]any

// newObject returns an empty typed object for a GroupVersionKind, or an error for
// a kind this repo is not expected to ship.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, nil
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "batch/v1/Job":
		return &batchv1.Job{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}, nil
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "keda.sh/v1alpha1/ScaledObject":
		return &ScaledObject{}, nil
	}
	return nil, fmt.Errorf("unexpected kind %s %s", apiVersion, kind)
}

func render(t *testing.T, overlay string) objects {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "overlays", overlay))
	if err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	out := objects{}
	for _, res := range resMap.Resources() {
		body, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := newObject(res.GetApiVersion(), res.GetKind())
		if err != nil {
			t.Fatalf("%s: %v", overlay, err)
		}
		// Strict: unknown or duplicate fields fail.
		if err := yaml.UnmarshalStrict(body, obj); err != nil {
			t.Fatalf("%s: %s/%s does not decode strictly: %v", overlay, res.GetKind(), res.GetName(), err)
		}
		if ns := res.GetNamespace(); res.GetKind() != "Namespace" && ns != "vidscan" {
			t.Errorf("%s: %s/%s in namespace %q, want vidscan", overlay, res.GetKind(), res.GetName(), ns)
		}
		out[res.GetKind()+"/"+res.GetName()] = obj
	}
	return out
}

func get[T any](t *testing.T, objs objects, key string) T {
	t.Helper()
	obj, ok := objs[key].(T)
	if !ok {
		t.Fatalf("%s missing (have %d objects)", key, len(objs))
	}
	return obj
}

func container(t *testing.T, d *appsv1.Deployment, name string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("deployment %s has no container %s", d.Name, name)
	return corev1.Container{}
}

func TestOverlaysRenderAndDecodeStrictly(t *testing.T) {
	for _, overlay := range []string{"cpu", "gpu"} {
		t.Run(overlay, func(t *testing.T) {
			objs := render(t, overlay)
			server := get[*appsv1.Deployment](t, objs, "Deployment/vidscan-server")
			c := container(t, server, "server")
			if c.LivenessProbe == nil || c.LivenessProbe.GRPC == nil || c.LivenessProbe.GRPC.Service == nil ||
				*c.LivenessProbe.GRPC.Service != "vidscan.live" {
				t.Errorf("server liveness must be the gRPC health check on vidscan.live: %+v", c.LivenessProbe)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.GRPC == nil || c.ReadinessProbe.GRPC.Port != 50051 ||
				(c.ReadinessProbe.GRPC.Service != nil && *c.ReadinessProbe.GRPC.Service != "") {
				t.Errorf("server readiness must be the overall gRPC health check: %+v", c.ReadinessProbe)
			}
			if c.Resources.Requests.Cpu().IsZero() {
				t.Error("server has no CPU request: the HPA's utilisation target needs one")
			}
			if sc := server.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
				t.Error("server pods must run as non-root")
			}
			hpa := get[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "HorizontalPodAutoscaler/vidscan-server")
			if hpa.Spec.ScaleTargetRef.Name != "vidscan-server" || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
				t.Errorf("HPA must scale vidscan-server on CPU: %+v", hpa.Spec)
			}
			pdb := get[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget/vidscan-server")
			if pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != "vidscan-server" {
				t.Errorf("PDB selects %v", pdb.Spec.Selector.MatchLabels)
			}
			so := get[*ScaledObject](t, objs, "ScaledObject/vidscan-worker")
			trig := so.Spec.Triggers[0]
			if so.Spec.ScaleTargetRef.Name != "vidscan-worker" || trig.Type != "redis-streams" ||
				trig.Metadata["stream"] != "vidscan:analysis-jobs" || trig.Metadata["consumerGroup"] != "analysis-workers" {
				t.Errorf("worker must scale on the analysis stream's lag: %+v", so.Spec)
			}
			worker := get[*appsv1.Deployment](t, objs, "Deployment/vidscan-worker")
			if args := container(t, worker, "worker").Args; len(args) != 1 || args[0] != "worker" {
				t.Errorf("worker args %v", args)
			}
			job := get[*batchv1.Job](t, objs, "Job/vidscan-migrate")
			if args := job.Spec.Template.Spec.Containers[0].Args; len(args) != 1 || args[0] != "migrate" {
				t.Errorf("migrate job args %v", args)
			}
			np := get[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy/vidscan-server-ingress")
			from := np.Spec.Ingress[0].From
			if len(from) != 2 || from[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "vidscan-gateway" {
				t.Errorf("only the gateway and internal callers may reach the server: %+v", from)
			}
			get[*networkingv1.Ingress](t, objs, "Ingress/vidscan-gateway")
			get[*corev1.Secret](t, objs, "Secret/vidscan-secrets")
			gw := get[*appsv1.Deployment](t, objs, "Deployment/vidscan-gateway")
			if img := container(t, gw, "gateway").Image; img != "ghcr.io/vidscan/vidscan-gateway:latest" {
				t.Errorf("gateway image %q", img)
			}
			// The gateway balances over every server pod: its upstream is a dns:/// name
			// of a headless Service that selects the server pods.
			pods := get[*corev1.Service](t, objs, "Service/vidscan-server-pods")
			upstream := ""
			for _, e := range container(t, gw, "gateway").Env {
				if e.Name == "VIDSCAN_GATEWAY_UPSTREAM" {
					upstream = e.Value
				}
			}
			if pods.Spec.ClusterIP != corev1.ClusterIPNone ||
				pods.Spec.Selector["app.kubernetes.io/name"] != "vidscan-server" ||
				upstream != "dns:///vidscan-server-pods:50051" {
				t.Errorf("gateway upstream %q must name the headless server Service (clusterIP %q, selector %v)",
					upstream, pods.Spec.ClusterIP, pods.Spec.Selector)
			}

			// Triton's model repository claim is shipped, not assumed.
			tritonPod := get[*appsv1.Deployment](t, objs, "Deployment/vidscan-triton").Spec.Template.Spec
			for _, v := range tritonPod.Volumes {
				if v.PersistentVolumeClaim != nil {
					get[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim/"+v.PersistentVolumeClaim.ClaimName)
				}
			}
			triton := container(t, get[*appsv1.Deployment](t, objs, "Deployment/vidscan-triton"), "triton")
			gpus := triton.Resources.Limits["nvidia.com/gpu"]
			nodeSel := get[*appsv1.Deployment](t, objs, "Deployment/vidscan-triton").Spec.Template.Spec.NodeSelector
			switch overlay {
			case "gpu":
				if gpus.Value() != 1 || nodeSel["nvidia.com/gpu.present"] != "true" {
					t.Errorf("gpu overlay: Triton needs one GPU and a GPU node: limits %v, nodeSelector %v", triton.Resources.Limits, nodeSel)
				}
			case "cpu":
				if !gpus.IsZero() || len(nodeSel) != 0 {
					t.Errorf("cpu overlay must not ask for GPUs: %v %v", triton.Resources.Limits, nodeSel)
				}
			}
		})
	}
}

// A field that no Kubernetes type has must fail the decode: proves the check bites.
func TestStrictDecodeRejectsUnknownFields(t *testing.T) {
	bad := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n")
	if err := yaml.UnmarshalStrict(bad, &appsv1.Deployment{}); err == nil {
		t.Fatal("a misspelt field (replica) decoded without error")
	}
	badSO := []byte("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  scaleTargetRef: {name: w}\n  maxReplicas: 3\n  triggers: []\n")
	if err := yaml.UnmarshalStrict(badSO, &ScaledObject{}); err == nil {
		t.Fatal("a ScaledObject field KEDA does not define (maxReplicas) decoded without error")
	}
}
